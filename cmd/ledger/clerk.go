package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

// clerkAPIConfig reads CLERK_SECRET_KEY (required, checked: one line naming
// what is wrong, never the key), CLERK_API_URL (default Clerk's API) and
// CLERK_API_RATE_LIMIT (requests per second; empty for Clerk's limit of
// the key's instance, "off" for none, against a local server).
func (a *app) clerkAPIConfig(cmd *cobra.Command) (clerkapi.Config, error) {
	return a.clerkAPIConfigFor(a.setting(cmd, "clerk-secret-key", "CLERK_SECRET_KEY"))
}

// clerkAPIConfigFor is clerkAPIConfig with the secret key given.
func (a *app) clerkAPIConfigFor(key string) (clerkapi.Config, error) {
	cfg := clerkapi.Config{
		SecretKey: key,
		BaseURL:   strings.TrimSpace(a.env("CLERK_API_URL")),
	}
	if err := clerkapi.CheckSecretKey(cfg.SecretKey); err != nil {
		return cfg, err
	}
	switch v := strings.TrimSpace(a.env("CLERK_API_RATE_LIMIT")); v {
	case "":
	case "off", "0":
		cfg.RateLimit = rate.Inf
	default:
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n <= 0 || n > 100000 {
			return cfg, domain.Errorf(domain.EINVALID, "CLERK_API_RATE_LIMIT %q is not requests per second (e.g. 100), or off", v)
		}
		cfg.RateLimit = rate.Limit(n)
	}
	return cfg, nil
}

// clerkAPI returns a Backend API client from the settings.
func (a *app) clerkAPI(cmd *cobra.Command) (*clerkapi.Client, error) {
	cfg, err := a.clerkAPIConfig(cmd)
	if err != nil {
		return nil, err
	}
	log, err := a.logger(cmd)
	if err != nil {
		return nil, err
	}
	cfg.Log = log
	return clerkapi.New(cfg)
}

// withSyncer runs fn with a Syncer on the database and the Backend API
// client (import, reconcile), and closes the database after.
func (a *app) withSyncer(cmd *cobra.Command, fn func(*clerksync.Syncer) error) error {
	api, err := a.clerkAPI(cmd)
	if err != nil {
		return err
	}
	log, err := a.logger(cmd)
	if err != nil {
		return err
	}
	db, err := a.openDB(cmd)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(clerksync.New(db, api, log))
}

func (a *app) importCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Backfill the ledger from Clerk's Backend API (users, organizations)",
	}
	var restart bool
	users := &cobra.Command{
		Use:   "users",
		Short: "Store every Clerk user as a user.snapshot event (resumable, idempotent)",
		Long: `import users reads every user from Clerk's Backend API (CLERK_SECRET_KEY,
CLERK_API_URL; pages of 500 in created_at order) and stores each as one
user.snapshot event holding the exact bytes of its user object (source
clerk_api). A user whose updated_at has not changed since the last import
stores nothing new; webhooks that are newer win in the users projection.

Rate limits are respected (CLERK_API_RATE_LIMIT, default Clerk's limit for the
key's instance); 429 waits for Retry-After, 5xx and network errors are retried
with backoff. Interrupted (Ctrl-C, a crash), it resumes at the first page it
had not stored; --restart starts a new pass. A malformed user is reported with
its id and skipped. Exits 1 when any user failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSyncer(cmd, func(s *clerksync.Syncer) error { return a.importUsers(cmd.Context(), s, restart) })
		},
	}
	users.Flags().BoolVar(&restart, "restart", false, "start a new pass from the first user instead of resuming an interrupted one")
	var orgRestart bool
	orgs := &cobra.Command{
		Use:   "organizations",
		Short: "Store every organization and membership as organization.snapshot / organizationMembership.snapshot events",
		Long: `import organizations reads every organization from Clerk's Backend API
(GET /v1/organizations, pages of 500) and each one's memberships (GET
/v1/organizations/{id}/memberships), and stores them as organization.snapshot
and organizationMembership.snapshot events holding each object's exact bytes
(source clerk_api), with the guarantees of import users: idempotent (object id
+ updated_at), newer webhooks win in the organizations projection, resumable
(--restart starts over), malformed objects reported and skipped (exit 1).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSyncer(cmd, func(s *clerksync.Syncer) error {
				view := a.progressOf("import organizations", "organizations")
				sum, err := s.ImportOrganizations(cmd.Context(), clerksync.ImportOptions{Restart: orgRestart, Progress: func(p clerksync.Progress) {
					view.update("importing", int64(p.Offset), max(p.Total, int64(p.Offset)))
				}})
				view.finish()
				return a.importDone(sum, err, "organizations and memberships")
			})
		},
	}
	orgs.Flags().BoolVar(&orgRestart, "restart", false, "start a new pass from the first organization instead of resuming an interrupted one")
	cmd.AddCommand(users, orgs)
	return cmd
}

// importUsers runs ledger import users with s.
func (a *app) importUsers(ctx context.Context, s *clerksync.Syncer, restart bool) error {
	view := a.progressOf("import users", "users")
	sum, err := s.ImportUsers(ctx, clerksync.ImportOptions{Restart: restart, Progress: func(p clerksync.Progress) {
		view.update("importing", int64(p.Offset), max(p.Total, int64(p.Offset)))
	}})
	view.finish()
	return a.importDone(sum, err, "users")
}

// importDone prints an import's summary (what: "users", …) and turns its
// outcome into the command's: an interruption says how to resume, any
// failed object exits 1.
func (a *app) importDone(sum clerksync.ImportSummary, err error, what string) error {
	a.printImport(sum, what)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("import interrupted at offset %d: run it again to resume", sum.Offset)
		}
		return err
	}
	if sum.Failed > 0 {
		return exitCode(1)
	}
	return nil
}

func (a *app) printImport(sum clerksync.ImportSummary, what string) {
	from := ""
	if sum.Resumed {
		from = fmt.Sprintf(" (resumed at offset %d)", sum.FromOffset)
	}
	rate := float64(sum.Offset-sum.FromOffset) / max(sum.Duration.Seconds(), 0.001)
	unit := "users"
	if what != "users" {
		unit = "organizations" // the list's offset counts organizations
	}
	fmt.Fprintf(a.stdout, "imported %d, unchanged %d, failed %d %s%s in %s (%.0f %s/s)\n",
		sum.Imported, sum.Unchanged, sum.Failed, what, from, sum.Duration.Round(time.Millisecond), rate, unit)
	for _, f := range sum.Failures {
		id := f.ObjectID
		if id == "" {
			id = "(no id)"
		}
		fmt.Fprintf(a.stdout, "failed: %s at position %d: %s\n", id, f.Position, f.Reason)
	}
	if sum.Failed > int64(len(sum.Failures)) {
		fmt.Fprintf(a.stdout, "(the first %d failures of this run are shown; all are in clerk_import_failures)\n", len(sum.Failures))
	}
}

func (a *app) reconcileCmd() *cobra.Command {
	var dryRun bool
	var maxGone int
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Compare the users projection with Clerk's list of users and repair the drift",
		Long: `reconcile lists every user from Clerk's Backend API (CLERK_SECRET_KEY,
CLERK_API_URL) and compares each with the users projection:

  missing       in Clerk, not here                → a user.snapshot is appended
  stale         Clerk's updated_at is newer       → a user.snapshot is appended
  gone          here, not in Clerk (GET says 404) → a user.snapshot_deleted is appended
  same          up to date
  deleted_here  deleted here, still in Clerk      → reported only

--dry-run only reports. A safety limit (--max-gone, default 10 users or 5% of
the live users, whichever is more; -1 for none) keeps a broken or empty
answer from marking everyone deleted: past it, no one is marked deleted and
the run says so. Every run is recorded and shown to auditors. Exits 1 when
the run failed, was held back, or could not read some users.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withSyncer(cmd, func(s *clerksync.Syncer) error {
				run, err := s.Reconcile(cmd.Context(), clerksync.ReconcileOptions{DryRun: dryRun, MaxGone: maxGone, Trigger: clerksync.TriggerCLI})
				if err != nil && run.ID == 0 {
					return err // not run (another is running), nothing recorded
				}
				verb := "repaired"
				if dryRun {
					verb = "dry run, would repair"
				}
				fmt.Fprintf(a.stdout, "reconcile run %d: %d users in Clerk, %d live here: missing %d, stale %d, gone %d, same %d, deleted here %d; %s %d, failed %d\n",
					run.ID, run.ClerkUsers, run.LedgerUsers, run.Missing, run.Stale, run.Gone, run.Same, run.DeletedHere, verb, repairable(run), run.Failed)
				if run.HeldBack != "" {
					fmt.Fprintln(a.stdout, "held back:", run.HeldBack)
				}
				if err != nil {
					return err
				}
				if run.HeldBack != "" || run.Failed > 0 {
					return exitCode(1)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only report: append nothing")
	cmd.Flags().IntVar(&maxGone, "max-gone", 0, "most users that may be marked deleted in one run (0: the default limit, -1: no limit)")
	return cmd
}

// repairable is what a run repaired, or for a dry run what it would have.
func repairable(r schema.ReconcileRun) int64 {
	if r.DryRun {
		n := r.Missing + r.Stale
		if r.HeldBack == "" {
			n += r.Gone
		}
		return n
	}
	return r.Repaired
}

// clerkSync is what serve runs against Clerk's Backend API when
// CLERK_SECRET_KEY is set: fetch-on-first-sign-in, and reconcile on a
// schedule when LEDGER_RECONCILE_EVERY is set.
type clerkSync struct {
	FirstSignIn *clerksync.FirstSignIn // nil without a secret key
	stop        func()
}

// minReconcileEvery is the shortest LEDGER_RECONCILE_EVERY: a reconcile
// lists every user (100k users: 200 requests, 20 s at a production
// instance's limit).
const minReconcileEvery = 10 * time.Minute

// defaultReconcileEvery is serve's reconcile schedule when a secret key is
// set and LEDGER_RECONCILE_EVERY is not: once a day, well inside Svix's
// ~27.6 h retry window's aftermath.
const defaultReconcileEvery = 24 * time.Hour

// reconcileEvery reads LEDGER_RECONCILE_EVERY: empty means
// defaultReconcileEvery with a secret key (hasKey) and off without one; "off"
// (or 0) is off.
func (a *app) reconcileEvery(hasKey bool) (time.Duration, error) {
	v := strings.TrimSpace(a.env("LEDGER_RECONCILE_EVERY"))
	if v == "" && hasKey {
		return defaultReconcileEvery, nil
	}
	if v == "" || v == "off" || v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minReconcileEvery {
		return 0, domain.Errorf(domain.EINVALID, "LEDGER_RECONCILE_EVERY %q is not a duration of at least %s (e.g. 24h), or off", v, minReconcileEvery)
	}
	if !hasKey {
		return 0, domain.Errorf(domain.EINVALID, "LEDGER_RECONCILE_EVERY is set but CLERK_SECRET_KEY is not: reconcile reads Clerk's Backend API")
	}
	return d, nil
}

// startClerkSync starts serve's use of the Backend API (see clerkSync).
// Without CLERK_SECRET_KEY it does nothing; a malformed key, CLERK_API_URL
// or LEDGER_RECONCILE_EVERY stops start-up with one line.
func (a *app) startClerkSync(ctx context.Context, log *slog.Logger, cfg config, db *sqlx.DB) (clerkSync, error) {
	every, err := a.reconcileEvery(cfg.ClerkSecretKey != "")
	if err != nil || cfg.ClerkSecretKey == "" {
		return clerkSync{stop: func() {}}, err
	}
	apiCfg, err := a.clerkAPIConfigFor(cfg.ClerkSecretKey)
	if err != nil {
		return clerkSync{}, err
	}
	apiCfg.Log = log
	api, err := clerkapi.New(apiCfg)
	if err != nil {
		return clerkSync{}, err
	}
	cs := clerkSync{FirstSignIn: clerksync.NewFirstSignIn(db, api, log), stop: func() {}}
	if every == 0 {
		log.Info("reconcile schedule off (LEDGER_RECONCILE_EVERY): run `ledger reconcile`")
		return cs, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		reconcileOnSchedule(ctx, log, clerksync.New(db, api, log), every, time.Minute)
	}()
	cs.stop = func() { cancel(); <-done }
	log.Info("reconcile scheduled", "every", every.String())
	return cs, nil
}

// reconcileOnSchedule runs a reconcile every `every`, the first one
// `every` after the last recorded run (first from now when none is), so
// restarts do not make extra runs. It returns when ctx ends.
func reconcileOnSchedule(ctx context.Context, log *slog.Logger, s *clerksync.Syncer, every, first time.Duration) {
	next := time.Now().Add(first)
	if runs, err := schema.ReconcileRuns(ctx, s.DB(), 1); err == nil && len(runs) == 1 {
		next = runs[0].StartedAt.Add(every)
	}
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if _, err := s.Reconcile(ctx, clerksync.ReconcileOptions{Trigger: clerksync.TriggerSchedule}); err != nil && ctx.Err() == nil {
			log.Warn("scheduled reconcile failed", "err", err)
		}
		next = time.Now().Add(every)
	}
}

// defaultSilenceWarn is LEDGER_SILENCE_WARN's default.
const defaultSilenceWarn = 6 * time.Hour

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "How long since the last webhook delivery (per event family), the last import and reconcile; warns past LEDGER_SILENCE_WARN",
		Long: `status prints when the newest webhook delivery was stored and how long ago,
overall and per event family (Backend API snapshots are not deliveries), the
last import pass and the last reconcile run. When no delivery has been stored
for longer than LEDGER_SILENCE_WARN (a Go duration, default 6h) it prints a
warning and exits 1: Svix gives up on a delivery after about 27.6 hours of
retries, so a long silence may mean lost events (see the README's recovery
steps: replay from the Clerk dashboard, then ledger reconcile).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			warn := defaultSilenceWarn
			if v := strings.TrimSpace(a.env("LEDGER_SILENCE_WARN")); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d <= 0 {
					return domain.Errorf(domain.EINVALID, "LEDGER_SILENCE_WARN %q is not a positive duration (e.g. 6h, 30m)", v)
				}
				warn = d
			}
			db, err := a.openDB(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			fams, err := schema.LastDeliveries(ctx, db)
			if err != nil {
				return err
			}
			now, err := schema.Now(ctx, db)
			if err != nil {
				return err
			}
			ago := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() + " ago" }
			silent := false
			if len(fams) == 0 {
				fmt.Fprintln(a.stdout, "last delivery: none stored yet")
			} else {
				fmt.Fprintf(a.stdout, "last delivery: %s (%s)\n", fams[0].ReceivedAt.Format(time.RFC3339), ago(fams[0].ReceivedAt))
				for _, f := range fams {
					fmt.Fprintf(a.stdout, "  %-24s %s (%s)\n", f.Family, f.ReceivedAt.Format(time.RFC3339), ago(f.ReceivedAt))
				}
				silent = now.Sub(fams[0].ReceivedAt) > warn
			}
			for _, kind := range []string{clerksync.KindUsers, clerksync.KindOrganizations} {
				st, ok, err := schema.ReadImport(ctx, db, kind)
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				state := "interrupted at offset " + strconv.Itoa(st.NextOffset) + " (ledger import " + kind + " resumes it)"
				if st.Finished {
					state = "finished"
				}
				fmt.Fprintf(a.stdout, "last import of %s: started %s, %s: imported %d, unchanged %d, failed %d\n",
					kind, st.StartedAt.UTC().Format(time.RFC3339), state, st.Imported, st.Unchanged, st.Failed)
			}
			if runs, err := schema.ReconcileRuns(ctx, db, 1); err != nil {
				return err
			} else if len(runs) == 1 {
				r := runs[0]
				fmt.Fprintf(a.stdout, "last reconcile: %s (%s, %s): missing %d, stale %d, gone %d, same %d, repaired %d\n",
					r.StartedAt.Format(time.RFC3339), ago(r.StartedAt), r.Trigger, r.Missing, r.Stale, r.Gone, r.Same, r.Repaired)
			} else {
				fmt.Fprintln(a.stdout, "last reconcile: never (ledger reconcile)")
			}
			if silent {
				fmt.Fprintf(a.stdout, "WARNING: no webhook delivery for %s, more than LEDGER_SILENCE_WARN (%s): check the endpoint in the Clerk dashboard (Webhooks), replay what failed, then run ledger reconcile\n",
					now.Sub(fams[0].ReceivedAt).Round(time.Minute), warn)
				return exitCode(1)
			}
			return nil
		},
	}
}
