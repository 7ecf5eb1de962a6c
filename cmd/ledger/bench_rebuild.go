package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/spf13/cobra"
)

// benchRebuildCmd is `ledger bench rebuild`; attach it under `bench`.
func (a *app) benchRebuildCmd() *cobra.Command {
	var users, events int
	var dbName, cpuProfile string
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Time a users rebuild against a set-based SQL baseline on the same data",
		Long: `rebuild times ` + "`ledger projections rebuild users`" + ` (fold every event with
domain.Apply, build aside, swap) on a database of --events deliveries about
--users users, and in the same run a set-based SQL rebuild of the same data
(DISTINCT ON (user_id) ... ORDER BY transaction_id DESC, position DESC: the last
event of each user wins, extracted with jsonb), and prints both times, our time
as a ratio of the baseline's, events/s and this process's peak RSS during our
rebuild. It works in its own database (--db-name) on the DATABASE_URL server,
created and seeded (ledger seed) when empty; a later run reuses the data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			u, err := url.Parse(dsn)
			if err != nil || u.Host == "" {
				return domain.Errorf(domain.EINVALID, "DATABASE_URL must be a postgres:// URL for bench rebuild")
			}
			u.Path = "/" + dbName
			dsn = u.String()
			ctx := cmd.Context()
			if _, err := schema.CreateDatabase(ctx, dsn); err != nil {
				return err
			}
			db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 8})
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := schema.Migrate(ctx, db.DB); err != nil {
				return err
			}
			var have int64
			if err := db.GetContext(ctx, &have, `SELECT count(*) FROM events`); err != nil {
				return fmt.Errorf("count events: %w", schema.Classify(err))
			}
			if have == 0 {
				signer, _ := clerkgen.NewSigner(clerkgen.NewSecret())
				h, err := clerkgen.NewHistory(clerkgen.HistoryOptions{Users: users, Events: events, Seed: 1}, signer)
				if err != nil {
					return domain.Errorf(domain.EINVALID, "%v", err)
				}
				fmt.Fprintf(a.stdout, "seeding %s with %d deliveries about %d users...\n", dbName, events, users)
				start := time.Now()
				if err := seedHistory(ctx, db, h, a.stdout); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "seeded in %s\n", time.Since(start).Round(time.Millisecond))
				if _, err := db.ExecContext(ctx, `VACUUM (ANALYZE) events`); err != nil {
					return fmt.Errorf("vacuum events: %w", schema.Classify(err))
				}
				have = int64(h.Len())
			} else if have != int64(events) {
				fmt.Fprintf(a.stdout, "note: %s holds %d events (not --events %d); drop it to reseed\n", dbName, have, events)
			}
			var userEvents, distinctUsers int64
			if err := db.QueryRowxContext(ctx, `SELECT count(*), count(DISTINCT user_id) FROM events WHERE type LIKE 'user.%'`).Scan(&userEvents, &distinctUsers); err != nil {
				return fmt.Errorf("count user events: %w", schema.Classify(err))
			}
			fmt.Fprintf(a.stdout, "data: %d events, %d of them user.* events about %d users; GOMAXPROCS %d\n", have, userEvents, distinctUsers, runtime.GOMAXPROCS(0))

			// The SQL baseline reads bodies in clear: on a sealed ledger
			// (seeded with LEDGER_MASTER_KEY) it cannot run; compare our
			// rebuild with one of a clear database (--db-name) instead.
			var sealed bool
			if err := db.GetContext(ctx, &sealed, `SELECT EXISTS (SELECT 1 FROM events WHERE body_sealed IS NOT NULL)`); err != nil {
				return fmt.Errorf("look for sealed events: %w", schema.Classify(err))
			}
			var base time.Duration
			if sealed {
				fmt.Fprintf(a.stdout, "baseline (SQL DISTINCT ON): skipped, the bodies are sealed (compare with a database seeded without LEDGER_MASTER_KEY)\n")
			} else {
				start := time.Now()
				n, err := baselineUsers(ctx, db, "users_baseline")
				if err != nil {
					return err
				}
				base = time.Since(start)
				if _, err := db.ExecContext(ctx, `DROP TABLE users_baseline`); err != nil {
					return fmt.Errorf("drop baseline table: %w", schema.Classify(err))
				}
				fmt.Fprintf(a.stdout, "baseline (SQL DISTINCT ON): %d users in %s (%.0f events/s)\n", n, base.Round(time.Millisecond), float64(userEvents)/base.Seconds())
			}

			undoGC, _, err := tuneGC(a.env, passGCPercent, passMemLimit)
			if err != nil {
				return err
			}
			defer undoGC()
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			resetPeakRSS()
			var phases []string
			var phase string
			var phaseStart time.Time
			res, err := projections.Rebuild(ctx, db, projections.NewUsers(), func(p string, done, total int64) {
				if p != phase {
					if phase != "" {
						phases = append(phases, fmt.Sprintf("%s %s", phase, time.Since(phaseStart).Round(time.Millisecond)))
					}
					phase, phaseStart = p, time.Now()
				}
			})
			if err != nil {
				return err
			}
			phases = append(phases, fmt.Sprintf("%s %s", phase, time.Since(phaseStart).Round(time.Millisecond)))
			peak := peakRSS()
			fmt.Fprintf(a.stdout, "ours (fold with domain.Apply, build aside, swap): %d users from %d events in %s (%.0f events/s), peak RSS %s\n",
				res.Users, res.Events, res.Duration.Round(time.Millisecond), float64(res.Events)/res.Duration.Seconds(), peak)
			fmt.Fprintf(a.stdout, "  phases: %s\n", strings.Join(phases, ", "))
			if base > 0 {
				fmt.Fprintf(a.stdout, "ratio ours/baseline: %.2f\n", res.Duration.Seconds()/base.Seconds())
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&users, "users", 100000, "users to seed when the database is empty")
	cmd.Flags().IntVar(&events, "events", 1000000, "deliveries to seed when the database is empty")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of our rebuild to this file (go tool pprof)")
	cmd.Flags().StringVar(&dbName, "db-name", "ledger_bench_rebuild", "database to use on the DATABASE_URL server")
	return cmd
}

// resetPeakRSS resets the kernel's high-water mark of this process's
// resident set (Linux), so peakRSS measures from here.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS returns the process's peak resident set size (VmHWM, Linux), or
// "unknown".
func peakRSS() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return "unknown"
			}
			return fmt.Sprintf("%d MB", kb/1024)
		}
	}
	return "unknown"
}

// baselineUsers builds table (dropped first if it exists) from the user
// events with one set-based statement: the last user.* event of each user in
// ledger order, its fields extracted in SQL (DISTINCT ON (user_id) ... ORDER
// BY ... DESC). It is the speed baseline of `ledger bench rebuild`, not a
// correct fold: it trusts ledger order, so a late older update wins. It
// returns the number of rows built.
func baselineUsers(ctx context.Context, db *sqlx.DB, table string) (int64, error) {
	t := pq.QuoteIdentifier(table)
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS `+t); err != nil {
		return 0, fmt.Errorf("drop %s: %w", table, schema.Classify(err))
	}
	res, err := db.ExecContext(ctx, `CREATE TABLE `+t+` AS
SELECT user_id AS id,
       deleted,
       CASE WHEN deleted THEN '' ELSE COALESCE((SELECT a->>'email_address' FROM jsonb_array_elements(d->'email_addresses') a
                                                WHERE a->>'id' = d->>'primary_email_address_id' LIMIT 1), '') END AS email,
       CASE WHEN deleted THEN '' ELSE COALESCE(d->>'first_name', '') END AS first_name,
       CASE WHEN deleted THEN '' ELSE COALESCE(d->>'last_name', '') END AS last_name,
       CASE WHEN deleted THEN '' ELSE COALESCE(d->>'username', '') END AS username,
       CASE WHEN deleted THEN '' ELSE COALESCE(d->>'image_url', '') END AS image_url,
       CASE WHEN deleted THEN '{}'::jsonb ELSE COALESCE(d->'public_metadata', '{}'::jsonb) END AS public_metadata,
       to_timestamp((d->>'created_at')::bigint / 1000.0) AS created_at,
       to_timestamp((d->>'updated_at')::bigint / 1000.0) AS updated_at,
       position AS last_position
FROM (
    SELECT DISTINCT ON (user_id) user_id, position, type = 'user.deleted' AS deleted, body::jsonb->'data' AS d
    FROM events
    WHERE type IN ('user.created', 'user.updated', 'user.deleted') AND user_id IS NOT NULL
    ORDER BY user_id, transaction_id DESC, position DESC
) last`)
	if err != nil {
		return 0, fmt.Errorf("baseline rebuild into %s: %w", table, schema.Classify(err))
	}
	n, _ := res.RowsAffected()
	return n, nil
}
