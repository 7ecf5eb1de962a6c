package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

// clerkAPIConfig reads CLERK_SECRET_KEY (required, checked: one line naming
// what is wrong, never the key), CLERK_API_URL (default Clerk's API) and
// CLERK_API_RATE_LIMIT (requests per second; empty for Clerk's limit of
// the key's instance, "off" for none, against a local server).
func (a *app) clerkAPIConfig(cmd *cobra.Command) (clerkapi.Config, error) {
	cfg := clerkapi.Config{
		SecretKey: a.setting(cmd, "clerk-secret-key", "CLERK_SECRET_KEY"),
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

// syncer opens the database and the Backend API client for import and
// reconcile; close closes the database.
func (a *app) syncer(cmd *cobra.Command) (s *clerksync.Syncer, closeDB func(), err error) {
	api, err := a.clerkAPI(cmd)
	if err != nil {
		return nil, nil, err
	}
	log, err := a.logger(cmd)
	if err != nil {
		return nil, nil, err
	}
	db, err := a.openDB(cmd)
	if err != nil {
		return nil, nil, err
	}
	return clerksync.New(db, api, log), func() { db.Close() }, nil
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
			s, closeDB, err := a.syncer(cmd)
			if err != nil {
				return err
			}
			defer closeDB()
			view := a.progressOf("import users", "users")
			sum, err := s.ImportUsers(cmd.Context(), clerksync.ImportOptions{Restart: restart, Progress: func(p clerksync.Progress) {
				view.update("importing", int64(p.Offset), max(p.Total, int64(p.Offset)))
			}})
			view.finish()
			a.printImport(sum)
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
		},
	}
	users.Flags().BoolVar(&restart, "restart", false, "start a new pass from the first user instead of resuming an interrupted one")
	cmd.AddCommand(users)
	return cmd
}

func (a *app) printImport(sum clerksync.ImportSummary) {
	from := ""
	if sum.Resumed {
		from = fmt.Sprintf(" (resumed at offset %d)", sum.FromOffset)
	}
	rate := float64(sum.Offset-sum.FromOffset) / max(sum.Duration.Seconds(), 0.001)
	fmt.Fprintf(a.stdout, "imported %d, unchanged %d, failed %d users%s in %s (%.0f users/s)\n",
		sum.Imported, sum.Unchanged, sum.Failed, from, sum.Duration.Round(time.Millisecond), rate)
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
