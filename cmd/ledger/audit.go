package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

// auditCmd is `ledger audit`: the auditors' tools for operators with
// database access. Every query is recorded in the audit access log as
// cli:<os user>.
func (a *app) auditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Query the ledger's history, a user's past state, and prove the record unaltered",
		Long: `audit reads the ledger in DATABASE_URL directly. Queries and exports are
recorded in the audit access log (actor cli:$USER), like the workspace's.`,
	}
	cmd.AddCommand(a.auditEventsCmd(), a.auditUserCmd(), a.auditOrganizationCmd(), a.auditMembershipsCmd(), a.auditDigestCmd(), a.auditVerifyCmd())
	return cmd
}

// cliActor names the operator in the access log.
func (a *app) cliActor() audit.Actor {
	u := a.env("USER")
	if u == "" {
		u = "unknown"
	}
	return audit.Actor{ID: "cli:" + u, Channel: schema.ChannelCLI}
}

// openAudit opens the ledger database and the audit service on it, with
// verifier for signature re-checks (may be nil). Close the database when
// done.
func (a *app) openAudit(cmd *cobra.Command, verifier *svixsig.Verifier) (*audit.Service, *sqlx.DB, error) {
	dsn, err := a.requireDatabaseURL(cmd)
	if err != nil {
		return nil, nil, err
	}
	// Room for verify's parallel ranges (half the pool) and its exporting
	// transaction; the audit reads may take all of it.
	conns := 2*runtime.GOMAXPROCS(0) + 1
	db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: conns})
	if err != nil {
		return nil, nil, err
	}
	return audit.New(audit.Config{DB: db, Verifier: verifier, Conns: conns, QueueWait: time.Minute}), db, nil
}

func (a *app) auditEventsCmd() *cobra.Command {
	var (
		userID, since, until, format, cursor string
		types                                []string
		limit                                int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List or export ledger events in ledger order",
		Long: `events lists the ledger's events in ledger order with their chain hashes,
filtered like GET /api/audit/events. --format table prints one page (--limit,
default 100, at most 1000) and the cursor of the next; jsonl and csv stream
every matching event (or --limit of them) in constant memory.`,
		Example: `  ledger audit events --user-id user_123
  ledger audit events --type 'user.*' --since 2024-05-01T00:00:00Z --format csv > may.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := audit.EventQuery{Format: format, Filter: schema.EventFilter{UserID: userID, Types: types, Limit: limit}}
			if format == "table" {
				q.Format = audit.FormatJSON
			} else if format != audit.FormatJSONL && format != audit.FormatCSV {
				return domain.Errorf(domain.EINVALID, "--format %q is not table, jsonl or csv", format)
			}
			var err error
			if q.Filter.Since, err = flagTime("since", since); err != nil {
				return err
			}
			if q.Filter.Until, err = flagTime("until", until); err != nil {
				return err
			}
			if cursor != "" {
				if q.Filter.After, err = audit.DecodeCursor(cursor); err != nil {
					return domain.Errorf(domain.EINVALID, "--cursor: %s", domain.ErrorMessage(err))
				}
			}
			if err := q.Check(); err != nil {
				return domain.Errorf(domain.EINVALID, "--%s", strings.Replace(domain.ErrorMessage(err), "user_id", "user-id", 1))
			}
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			if format != "table" {
				undoGC, _, err := tuneGC(a.env, passGCPercent, passMemLimit)
				if err != nil {
					return err
				}
				defer undoGC()
				n, err := svc.Export(ctx, a.cliActor(), q, a.stdout)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "%d events\n", n)
				return nil
			}
			var events []schema.AuditEvent
			n, next, err := svc.Events(ctx, a.cliActor(), q, 0, func(_ int, e schema.AuditEvent) {
				e.Body = nil // the table does not show it
				events = append(events, e)
			})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "POSITION\tOCCURRED AT\tTYPE\tUSER\tDELIVERY\tCHAIN HASH")
			for _, e := range events {
				hash := "(not sealed)"
				if e.ChainHash != nil {
					hash = fmt.Sprintf("%x", e.ChainHash[:8])
				}
				user := e.UserID
				if user == "" {
					user = "-"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Position, e.OccurredAt.Format(time.RFC3339Nano), e.Type, user, e.DeliveryID, hash)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if next != "" {
				fmt.Fprintf(a.stderr, "%d events; more with --cursor %s\n", n, next)
			} else {
				fmt.Fprintf(a.stderr, "%d events\n", n)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&userID, "user-id", "", "only events about this Clerk user")
	f.StringArrayVar(&types, "type", nil, "only this type, or a prefix like user.* (repeatable)")
	f.StringVar(&since, "since", "", "only events that occurred at or after this RFC 3339 time")
	f.StringVar(&until, "until", "", "only events that occurred before this RFC 3339 time")
	f.IntVar(&limit, "limit", 0, "at most this many (table: default 100, max 1000; exports: all)")
	f.StringVar(&cursor, "cursor", "", "continue after this cursor (printed by the previous page)")
	f.StringVar(&format, "format", "table", "table, jsonl or csv")
	return cmd
}

func (a *app) auditUserCmd() *cobra.Command {
	var at, cursor, order string
	var limit int
	var changes bool
	cmd := &cobra.Command{
		Use:   "user ID",
		Short: "Print a user's state as of a time, folded from the ledger, and a page of the events that made it with what each changed",
		Long: `user folds the state of Clerk user ID from the ledger's events about them that
occurred at or before --at (default: now) with the users projection's own fold,
and prints it as JSON with one page of those events, oldest first, in time
order (--order time: when each change happened in Clerk, the user object's
updated_at else the event's timestamp) or ledger order (--order ledger), each
with the change it made to the folded state field by field, how it arrived
(out of order, late) and who made it (the event's http_request). --limit, at
most 1000, and 8 MiB of bodies a page; total counts them all; pass next_cursor
as --cursor for the next page. Without --at it also prints the users
projection's row and whether the two match. --changes prints the change list
as text instead of JSON.`,
		Example: `  ledger audit user user_123 --changes
  ledger audit user user_123 --order ledger --at 2024-05-28T12:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := flagTime("at", at)
			if err != nil {
				return err
			}
			if order != audit.OrderTime && order != audit.OrderLedger {
				return domain.Errorf(domain.EINVALID, "--order %q is not time or ledger", order)
			}
			page := audit.UserPage{Limit: limit, Order: order}
			if limit < 1 || limit > audit.MaxAuditLimit {
				return domain.Errorf(domain.EINVALID, "--limit %d is not from 1 to %d", limit, audit.MaxAuditLimit)
			}
			if cursor != "" {
				if page.After, err = audit.DecodeTimelineCursor(cursor); err != nil {
					return domain.Errorf(domain.EINVALID, "--cursor: %s", domain.ErrorMessage(err))
				}
				if page.After.Order != order {
					return domain.Errorf(domain.EINVALID, "--cursor is a place in %s order: give --order %s", page.After.Order, page.After.Order)
				}
			}
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			h, err := svc.User(cmd.Context(), a.cliActor(), args[0], t, page)
			if err != nil {
				return err
			}
			if h.Total == 0 {
				return domain.Errorf(domain.ENOTFOUND, "the ledger has no event about user %s by then", args[0])
			}
			if changes {
				printChanges(a.stdout, h)
				if h.NextCursor != "" {
					fmt.Fprintf(a.stderr, "events %d-%d of %d; more with --cursor %s\n", h.Offset+1, h.Offset+int64(h.Count), h.Total, h.NextCursor)
				}
				return nil
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(h)
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "RFC 3339 instant (default: now)")
	cmd.Flags().StringVar(&order, "order", audit.OrderTime, "time (when each change happened) or ledger (arrival)")
	cmd.Flags().IntVar(&limit, "limit", audit.DefaultAuditLimit, "events per page (at most 1000)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after this cursor (next_cursor of the previous page)")
	cmd.Flags().BoolVar(&changes, "changes", false, "print the change list as text instead of JSON")
	return cmd
}

func (a *app) auditOrganizationCmd() *cobra.Command {
	var at, cursor string
	var limit int
	cmd := &cobra.Command{
		Use:   "organization ID",
		Short: "Print an organization's state and memberships as of a time, folded from the ledger, and a page of its history (JSON)",
		Long: `organization folds the state of Clerk organization ID and of its memberships
from the ledger's organization and membership events that occurred at or
before --at (default: now) with the organizations projection's own fold, and
prints it as JSON with one page of its history: the organization, membership
and invitation events about it (--limit, at most 1000; pass next_cursor as
--cursor for the next page). Without --at it also prints the projection's
rows and whether they match.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := flagTime("at", at)
			if err != nil {
				return err
			}
			if limit < 1 || limit > audit.MaxAuditLimit {
				return domain.Errorf(domain.EINVALID, "--limit %d is not from 1 to %d", limit, audit.MaxAuditLimit)
			}
			page := audit.OrganizationPage{Limit: limit}
			if cursor != "" {
				if page.After, err = audit.DecodeCursor(cursor); err != nil {
					return domain.Errorf(domain.EINVALID, "--cursor: %s", domain.ErrorMessage(err))
				}
			}
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			h, err := svc.Organization(cmd.Context(), a.cliActor(), args[0], t, page)
			if err != nil {
				return err
			}
			if h.Total == 0 && !h.Exists {
				return domain.Errorf(domain.ENOTFOUND, "the ledger has no event about organization %s by then", args[0])
			}
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(h)
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "RFC 3339 instant (default: now)")
	cmd.Flags().IntVar(&limit, "limit", audit.DefaultAuditLimit, "events per page (at most 1000)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after this cursor (next_cursor of the previous page)")
	return cmd
}

func (a *app) auditMembershipsCmd() *cobra.Command {
	var at string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "memberships USER_ID",
		Short: "Which organizations a user was in, with which role, at a time (folded from the ledger)",
		Long: `memberships folds the organization memberships of Clerk user USER_ID, and
their organizations, from the ledger's events that occurred at or before --at
(default: now), and prints one line per membership: organization, role, and
whether the user was still in it then (memberships that had ended, or whose
organization was deleted, are listed as such). --json prints the whole answer.`,
		Example: `  ledger audit memberships user_123 --at 2024-05-28T12:00:00Z`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := flagTime("at", at)
			if err != nil {
				return err
			}
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			res, err := svc.UserOrganizations(cmd.Context(), a.cliActor(), args[0], t)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORGANIZATION\tNAME\tROLE\tJOINED\tSTATUS")
			for _, o := range res.Organizations {
				status, role := "member", o.Membership.Role
				switch {
				case o.Membership.Deleted:
					status, role = "left "+o.Membership.DeletedAt.Format(time.RFC3339), "-"
				case o.Organization.Deleted:
					status = "organization deleted " + o.Organization.DeletedAt.Format(time.RFC3339)
				}
				joined := "-"
				if !o.Membership.CreatedAt.IsZero() {
					joined = o.Membership.CreatedAt.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Organization.ID, o.Organization.DisplayName(), role, joined, status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if res.PoisonCount > 0 {
				fmt.Fprintf(a.stderr, "%d membership events skipped (poison): %s\n", res.PoisonCount, strings.Join(res.Poison, "; "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&at, "at", "", "RFC 3339 instant (default: now)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printChanges writes h's events as a change list: one block per event
// (when it happened, type, position, how it arrived and how the fold took
// it), then each changed field "old -> new" and who made it.
func printChanges(w io.Writer, h audit.UserHistory) {
	state := "no user event by then"
	if h.Exists {
		state = h.State.Name()
		if h.State.Deleted {
			state += " (deleted)"
		}
	}
	fmt.Fprintf(w, "user %s: %s; events %d-%d of %d, %s order\n", h.UserID, state, h.Offset+1, h.Offset+int64(h.Count), h.Total, h.Order)
	for _, e := range h.Events {
		var marks []string
		if e.OutOfOrder {
			marks = append(marks, "arrived out of order")
		}
		if e.Late {
			marks = append(marks, fmt.Sprintf("arrived %s late", time.Duration(e.DelaySeconds*float64(time.Second)).Round(time.Second)))
		}
		if e.AfterAt {
			marks = append(marks, "after --at")
		}
		marks = append(marks, string(e.Outcome))
		if e.Outcome == domain.OutcomeApplied && len(e.Changes) == 0 {
			marks[len(marks)-1] = "no change"
		}
		fmt.Fprintf(w, "\n%s  %s  #%d  %s\n", e.ChangedAt.Format(time.RFC3339Nano), e.Type, e.Position, strings.Join(marks, ", "))
		for _, c := range e.Changes {
			fmt.Fprintf(w, "    %s: %s -> %s\n", c.Field, cliValue(c.Old), cliValue(c.New))
		}
		if e.Poison != "" {
			fmt.Fprintf(w, "    skipped: %s\n", e.Poison)
		}
		if e.Request != nil {
			fmt.Fprintf(w, "    made from %s %s\n", cliValue(e.Request.ClientIP), strconv.Quote(e.Request.UserAgent))
		}
	}
}

// cliValue quotes a change's value for a terminal (controls and direction
// overrides come out escaped); an absent value is "-".
func cliValue(s string) string {
	if s == "" {
		return "-"
	}
	return strconv.QuoteToGraphic(s)
}

func (a *app) auditDigestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "digest",
		Short: "Print the chain head POSITION:HASH and when it was sealed, to keep elsewhere",
		Long: `digest prints the head of the ledger's hash chain as POSITION:HASH and the
time it was sealed. Keep it outside the database (a ticket, an email, paper):
later, ledger audit verify --digest POSITION:HASH proves that the ledger up to
that event has not been altered since.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			st, err := svc.ChainStatus(cmd.Context())
			if err != nil {
				return err
			}
			if st.Head == nil {
				return domain.Errorf(domain.ENOTFOUND, "the chain has no sealed event yet")
			}
			fmt.Fprintf(a.stdout, "%s %s\n", st.Head, st.HeadSealedAt.Format(time.RFC3339Nano))
			return nil
		},
	}
}

func (a *app) auditVerifyCmd() *cobra.Command {
	var (
		digest     string
		signatures bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the hash chain (and re-check signatures); print OK or the first position that does not match",
		Long: `verify recomputes the whole hash chain from the stored events in seal order and
checks every stored link, that no sealed event is missing and no event was
slipped in, and with --digest that the chain still reaches the digest you kept.
With --signatures it also re-checks every stored delivery's Svix signature with
CLERK_WEBHOOK_SIGNING_SECRET (all of them, space-separated, during a rotation),
ignoring the age limit: proof that Clerk sent exactly these bytes.
It prints OK or the first position that does not match and then exits 1.
Every run is recorded in the verification log shown in the workspace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := audit.VerifyOptions{Signatures: signatures}
			var verifier *svixsig.Verifier
			if digest != "" {
				d, err := domain.ParseDigest(digest)
				if err != nil {
					return domain.Errorf(domain.EINVALID, "--digest: %s", domain.ErrorMessage(err))
				}
				opts.Digest = &d
			}
			if signatures {
				cfg, err := a.loadConfig(cmd)
				if err != nil {
					return err
				}
				if verifier, err = svixsig.NewVerifier(cfg.WebhookSecrets); err != nil {
					return err
				}
			}
			svc, db, err := a.openAudit(cmd, verifier)
			if err != nil {
				return err
			}
			defer db.Close()
			undoGC, _, err := tuneGC(a.env, passGCPercent, passMemLimit)
			if err != nil {
				return err
			}
			defer undoGC()
			res, err := svc.Verify(cmd.Context(), a.cliActor(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, res.Message())
			if !res.OK {
				fmt.Fprintf(a.stdout, "first position that does not match: %d\n", res.FirstBad())
				return exitCode(1)
			}
			secs := res.Chain.Duration.Seconds()
			if res.Signatures != nil {
				secs += res.Signatures.Duration.Seconds()
			}
			fmt.Fprintf(a.stderr, "verified in %.2fs\n", secs)
			return nil
		},
	}
	cmd.Flags().StringVar(&digest, "digest", "", "a kept digest POSITION:HASH (from ledger audit digest) the chain must reach")
	cmd.Flags().BoolVar(&signatures, "signatures", false, "also re-check each stored delivery's Svix signature, ignoring its age")
	cmd.Flags().String("webhook-secret", "", "signing secret(s), space-separated (overrides CLERK_WEBHOOK_SIGNING_SECRET)")
	return cmd
}

// flagTime parses the optional RFC 3339 flag value s of flag --name.
func flagTime(name, s string) (time.Time, error) {
	if strings.TrimSpace(s) == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "--%s %q is not an RFC 3339 time (e.g. 2024-05-28T12:00:00Z)", name, s)
	}
	return t.UTC(), nil
}
