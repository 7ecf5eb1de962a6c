package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/clerk-ledger/clerk-ledger/translog"
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
	cmd.AddCommand(a.auditEventsCmd(), a.auditUserCmd(), a.auditOrganizationCmd(), a.auditMembershipsCmd(), a.auditDigestCmd(), a.auditVerifyCmd(),
		a.auditKeyCmd(), a.auditCheckpointCmd(), a.auditProofCmd(), a.auditVerifyProofCmd(), a.auditCosignCmd())
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
	return a.openAuditKey(cmd, verifier, nil)
}

// openAuditKey is openAudit with the log's verifier key (may be nil).
func (a *app) openAuditKey(cmd *cobra.Command, verifier *svixsig.Verifier, logKey *translog.Verifier) (*audit.Service, *sqlx.DB, error) {
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
	return audit.New(audit.Config{DB: db, Verifier: verifier, LogKey: logKey, Conns: conns, QueueWait: time.Minute}), db, nil
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
		Long: `events lists the ledger's events in ledger order with their Merkle leaves,
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
			fmt.Fprintln(tw, "POSITION\tOCCURRED AT\tTYPE\tUSER\tDELIVERY\tLEAF")
			for _, e := range events {
				hash := "(not sealed)"
				if e.LeafHash != nil {
					hash = fmt.Sprintf("%d %s", e.LeafIndex, base64.StdEncoding.EncodeToString(e.LeafHash)[:12])
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
		Short: "Print the latest signed checkpoint, to keep elsewhere (as ledger audit checkpoint)",
		Long: `digest prints the latest signed checkpoint of the ledger's Merkle tree (a C2SP
tlog-checkpoint note: origin, tree size, root hash, Ed25519 signature). Keep it
outside the database (a ticket, an email, a witness): later, ledger audit verify
--checkpoint FILE proves that the ledger still extends it. (Before the tree the
ledger had a hash chain, now frozen: its POSITION:HASH digests are still checked
by ledger audit verify --digest.) The read is recorded in the access log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.printCheckpoint(cmd, 0) },
	}
}

func (a *app) auditCheckpointCmd() *cobra.Command {
	var size int64
	cmd := &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the latest signed checkpoint (or the kept one of --size)",
		Long: `checkpoint prints the latest signed checkpoint of the ledger's Merkle tree, or
the kept one of tree size --size, byte for byte as signed (a C2SP
tlog-checkpoint note). Save it to a file and keep it outside the operator's
reach; ledger audit verify --checkpoint FILE later proves the ledger extends it.
The read is recorded in the access log.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return a.printCheckpoint(cmd, size) },
	}
	cmd.Flags().Int64Var(&size, "size", 0, "the kept checkpoint of this tree size (default: the latest)")
	return cmd
}

func (a *app) printCheckpoint(cmd *cobra.Command, size int64) error {
	svc, db, err := a.openAudit(cmd, nil)
	if err != nil {
		return err
	}
	defer db.Close()
	cp, err := svc.Checkpoint(cmd.Context(), a.cliActor(), size)
	if err != nil {
		return err
	}
	_, err = io.WriteString(a.stdout, cp.Note)
	return err
}

func (a *app) auditKeyCmd() *cobra.Command {
	var newName string
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Print the log's verifier key (from LEDGER_LOG_KEY), or make a new signing key",
		Long: `key prints the public verifier key of the checkpoint signing key in
LEDGER_LOG_KEY (the key text or a file holding it): give it to auditors and
witnesses, who check checkpoints and proof bundles with it (ledger audit
verify-proof FILE --key KEY). With --new NAME it generates a new Ed25519 signing
key named NAME (the log's origin, e.g. clerk-ledger/ledger.example.com) and
prints it (LEDGER_LOG_KEY=..., keep it secret) and its verifier key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if newName != "" {
				skey, vkey, err := translog.GenerateKey(newName)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "LEDGER_LOG_KEY=%s\n%s\n", skey, vkey)
				return nil
			}
			lc, err := loadLogConfig(a.env)
			if err != nil {
				return err
			}
			if lc.Signer == nil {
				return domain.Errorf(domain.EINVALID, "LEDGER_LOG_KEY is not set (ledger dev keeps one in ./.data/log.key; ledger audit key --new NAME makes one)")
			}
			fmt.Fprintln(a.stdout, lc.Signer.VerifierKey())
			return nil
		},
	}
	cmd.Flags().StringVar(&newName, "new", "", "generate a new signing key with this name (the log's origin)")
	return cmd
}

func (a *app) auditProofCmd() *cobra.Command {
	var user, out string
	var position, size int64
	cmd := &cobra.Command{
		Use:   "proof",
		Short: "Write a user's proof bundle (--user), or print one event's inclusion proof (--position)",
		Long: `proof --user USER_ID writes the user's proof bundle as JSON (to --out, or
stdout): the latest signed checkpoint and every event about the user in its
tree, each with its exact body, its leaf fields and its inclusion proof. Anyone
with the log's verifier key checks it offline with ledger audit verify-proof.
proof --position P prints the inclusion proof of one event (in the latest
checkpoint's tree, or --size's). Each is recorded in the access log.`,
		Example: `  ledger audit proof --user user_123 --out user_123.proof.json
  ledger audit verify-proof user_123.proof.json --key "$(ledger audit key)"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (user == "") == (position == 0) {
				return domain.Errorf(domain.EINVALID, "give one of --user or --position")
			}
			svc, db, err := a.openAudit(cmd, nil)
			if err != nil {
				return err
			}
			defer db.Close()
			var data []byte
			if user != "" {
				b, err := svc.UserProof(cmd.Context(), a.cliActor(), user)
				if err != nil {
					return err
				}
				if data, err = b.Encode(); err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "%d events of %s in the tree of %d\n", len(b.Events), user, mustCheckpointSize(b.Checkpoint))
			} else {
				p, err := svc.Proof(cmd.Context(), a.cliActor(), position, size)
				if err != nil {
					return err
				}
				if data, err = json.MarshalIndent(p, "", "  "); err != nil {
					return err
				}
				data = append(data, '\n')
			}
			if out == "" {
				_, err = a.stdout.Write(data)
				return err
			}
			if err := os.WriteFile(out, data, 0o644); err != nil {
				return domain.Errorf(domain.EINVALID, "--out: %v", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "the Clerk user id whose proof bundle to write")
	f.StringVar(&out, "out", "", "write to this file instead of stdout")
	f.Int64Var(&position, "position", 0, "print the inclusion proof of the event at this position")
	f.Int64Var(&size, "size", 0, "with --position: in the tree of the kept checkpoint of this size (default: the latest)")
	return cmd
}

// mustCheckpointSize reads the tree size a checkpoint note states (0 when
// it states none).
func mustCheckpointSize(note string) int64 {
	c, err := translog.ParseCheckpoint(translog.NoteBody([]byte(note)))
	if err != nil {
		return 0
	}
	return c.Size
}

func (a *app) auditVerifyProofCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "verify-proof FILE",
		Short: "Check a user's proof bundle offline, with no database",
		Long: `verify-proof checks a proof bundle (ledger audit proof --user, or GET
/api/audit/users/{id}/proof) with the log's verifier key (--key: the key text or
a file holding it; ledger audit key prints it), without any database: the file
is byte for byte as the ledger wrote it, the checkpoint's Ed25519 signature,
each event's leaf recomputed from the fields it carries, each inclusion proof
to the signed root, and each body against the commitment in its leaf. It
prints OK or the first problem and then exits 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(key) == "" {
				return domain.Errorf(domain.EINVALID, "--key VERIFIER_KEY is required (ledger audit key prints it)")
			}
			v, err := parseVerifierFlag(key)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return domain.Errorf(domain.EINVALID, "read the bundle: %v", err)
			}
			rep, err := translog.VerifyBundle(data, v)
			if err != nil {
				return err
			}
			if !rep.OK {
				fmt.Fprintln(a.stdout, "FAIL: "+rep.Problem)
				return exitCode(1)
			}
			fmt.Fprintf(a.stdout, "OK: %d events of %s are in the tree of %d leaves signed by %s (checkpoint of %s)", len(rep.Events), rep.UserID, rep.Checkpoint.Size, v.Name(), rep.Checkpoint.Origin)
			if rep.Erased > 0 {
				fmt.Fprintf(a.stdout, "; %d bodies erased (their leaves verify, their content is gone)", rep.Erased)
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the log's verifier key (name+hash+key), or a file holding it")
	return cmd
}

func (a *app) auditVerifyCmd() *cobra.Command {
	var (
		digest, checkpoint, key string
		signatures              bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Recompute the Merkle tree (or prove a kept checkpoint extended); print OK or the first position that does not match",
		Long: `verify recomputes the whole Merkle tree from the stored events: every leaf,
every hash the tree stores, the root at every kept checkpoint (and each one's
signature with the log's verifier key: --key, or LEDGER_LOG_KEY's), that no
event is missing, reordered or slipped in. With --digest POSITION:HASH it also
checks that the frozen hash chain (from before the tree) still reaches that
digest. With --signatures it also re-checks every stored delivery's Svix
signature with CLERK_WEBHOOK_SIGNING_SECRET (all of them, space-separated,
during a rotation), ignoring the age limit: proof that Clerk sent exactly these
bytes.

With --checkpoint FILE (a checkpoint note you kept) it instead proves that the
ledger today extends that checkpoint, nothing before it changed or removed,
without re-reading any event: the signatures of the kept and the latest
checkpoint, and the consistency proof between them (O(log n) hashes).

It prints OK or the first problem and then exits 1. Every run is recorded in
the verification log shown in the workspace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			lc, err := loadLogConfig(a.env)
			if err != nil {
				return err
			}
			logKey, err := lc.verifierKey(key)
			if err != nil {
				return err
			}
			if checkpoint != "" {
				if digest != "" || signatures {
					return domain.Errorf(domain.EINVALID, "--checkpoint is a check of its own: run --digest and --signatures without it")
				}
				note, err := os.ReadFile(checkpoint)
				if err != nil {
					return domain.Errorf(domain.EINVALID, "--checkpoint: %v", err)
				}
				if logKey == nil {
					return domain.Errorf(domain.EINVALID, "--checkpoint needs the log's verifier key: --key, or LEDGER_LOG_KEY")
				}
				svc, db, err := a.openAuditKey(cmd, nil, logKey)
				if err != nil {
					return err
				}
				defer db.Close()
				res, err := svc.VerifyCheckpoint(cmd.Context(), a.cliActor(), note)
				if err != nil {
					return err
				}
				fmt.Fprintln(a.stdout, res.Message())
				if !res.OK {
					return exitCode(1)
				}
				fmt.Fprintf(a.stderr, "verified in %.3fs\n", res.Duration.Seconds())
				return nil
			}
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
			svc, db, err := a.openAuditKey(cmd, verifier, logKey)
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
				if p := res.FirstBad(); p > 0 {
					fmt.Fprintf(a.stdout, "first position that does not match: %d\n", p)
				}
				return exitCode(1)
			}
			secs := res.Tree.Duration.Seconds()
			if res.Chain != nil {
				secs += res.Chain.Duration.Seconds()
			}
			if res.Signatures != nil {
				secs += res.Signatures.Duration.Seconds()
			}
			fmt.Fprintf(a.stderr, "verified in %.2fs\n", secs)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&checkpoint, "checkpoint", "", "a kept checkpoint note: prove the ledger today extends it (no event read)")
	f.StringVar(&key, "key", "", "the log's verifier key, or a file holding it (default: LEDGER_LOG_KEY's)")
	f.StringVar(&digest, "digest", "", "a digest POSITION:HASH of the frozen hash chain (from before the tree) that it must still reach")
	f.BoolVar(&signatures, "signatures", false, "also re-check each stored delivery's Svix signature, ignoring its age")
	f.String("webhook-secret", "", "signing secret(s), space-separated (overrides CLERK_WEBHOOK_SIGNING_SECRET)")
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
