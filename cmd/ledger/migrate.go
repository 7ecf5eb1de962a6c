package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
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
		RunE: func(cmd *cobra.Command, args []string) error {
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 2})
			if err != nil {
				return err
			}
			defer db.Close()
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
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "List the embedded migrations and whether each is applied",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 2})
			if err != nil {
				return err
			}
			defer db.Close()
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
		},
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
