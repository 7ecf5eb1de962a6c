package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

func (a *app) migrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (also done at start of serve and dev)",
		Long: `migrate applies the SQL migrations embedded in this binary to DATABASE_URL.
It holds a Postgres advisory lock meanwhile, so several processes may run it at
once: each migration is applied exactly once.`,
		Args: cobra.NoArgs,
		RunE: a.withSmallDB(func(cmd *cobra.Command, db *sqlx.DB) error {
			res, err := schema.Migrate(cmd.Context(), db.DB)
			if err != nil {
				return err
			}
			for _, r := range res {
				fmt.Fprintf(a.stdout, "applied %05d %s (%s)\n", r.Version, r.Name, r.Duration.Round(1e6))
			}
			if len(res) == 0 {
				fmt.Fprintln(a.stdout, "migrations are current")
			}
			return nil
		}),
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "List the embedded migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: a.withSmallDB(func(cmd *cobra.Command, db *sqlx.DB) error {
			st, err := schema.MigrationStatus(cmd.Context(), db.DB)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT")
			for _, s := range st {
				state, at := "pending", ""
				if s.Applied {
					state, at = "applied", s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
				}
				fmt.Fprintf(tw, "%05d\t%s\t%s\t%s\n", s.Version, s.Name, state, at)
			}
			return tw.Flush()
		}),
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "xid",
		Short: "Check the transaction counter against the ledger (after a restore) and print the fix",
		Long: `xid compares the cluster's transaction counter with the newest transaction id
stored in the events table. After a logical dump (pg_dump) is restored into a
new cluster the counter starts below the stored ids, so new deliveries would
sort before the ones already read and no projector would see them (watermill
issue 576); serve and project refuse to start then. xid prints OK, or the
pg_resetwal command that moves the counter past the stored ids, and exits 1.`,
		Args: cobra.NoArgs,
		RunE: a.withSmallDB(func(cmd *cobra.Command, db *sqlx.DB) error {
			c, err := schema.ReadXIDCounter(cmd.Context(), db)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "newest stored transaction id: %d\nnext transaction id:          %d\n", c.MaxStored, c.Next)
			if !c.Behind() {
				fmt.Fprintln(a.stdout, "OK: the counter is ahead of the ledger")
				return nil
			}
			fmt.Fprintf(a.stdout, `BEHIND: new deliveries would be invisible to the projectors. On the database server, as the
postgres user, with the cluster's data directory in $PGDATA:
  pg_ctl stop -D "$PGDATA" -m fast
  pg_resetwal -e %d "$PGDATA"
  pg_ctl start -D "$PGDATA"
(only the epoch of the transaction counter moves; nothing else in the cluster changes)
then run 'ledger migrate xid' again.
`, c.ResetEpoch())
			return domain.Errorf(domain.ECONFLICT, "the transaction counter is behind the ledger")
		}),
	})
	return cmd
}

// requireDatabaseURL returns DATABASE_URL (or --database-url), or a clear
// error naming it.
func (a *app) requireDatabaseURL(cmd *cobra.Command) (string, error) {
	dsn := a.setting(cmd, "database-url", "DATABASE_URL")
	if dsn == "" {
		return "", domain.Errorf(domain.EINVALID, "DATABASE_URL is not set (e.g. postgres://postgres@localhost:5432/ledger)")
	}
	return dsn, checkDatabaseURL(dsn)
}

// withSmallDB is the RunE of a command that runs a few statements on
// DATABASE_URL (migrate and its subcommands): fn gets a pool of two
// connections, closed after it.
func (a *app) withSmallDB(fn func(cmd *cobra.Command, db *sqlx.DB) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		dsn, err := a.requireDatabaseURL(cmd)
		if err != nil {
			return err
		}
		db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 2})
		if err != nil {
			return err
		}
		defer db.Close()
		return fn(cmd, db)
	}
}
