package main

import (
	"bufio"
	"context"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"slices"
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
	var dbName, cpuProfile, versus string
	var rounds int
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
created and seeded (ledger seed) when empty; a later run reuses the data.

With --versus CLEAR_DB (--db-name then a database seeded with LEDGER_MASTER_KEY
set, CLEAR_DB one of the same history seeded without it), it measures what
sealing costs a rebuild instead: --rounds rounds in this one process, each
rebuilding CLEAR_DB and --db-name (clear first, then sealed first, ...), and
prints each round's times and sealed/clear, then the median ratio (alternating
keeps the shared machine's drift out of it).`,
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
			if versus != "" {
				if !sealed {
					return domain.Errorf(domain.EINVALID, "--versus compares a sealed database with a clear one: %s holds no sealed event (seed it with LEDGER_MASTER_KEY set)", dbName)
				}
				return a.rebuildVersus(ctx, u, db, versus, rounds)
			}
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			res, phases, peak, err := timeRebuild(ctx, db)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "ours (fold with domain.Apply, build aside, swap): %d users from %d events in %s (%.0f events/s), peak RSS %s\n",
				res.Users, res.Events, res.Duration.Round(time.Millisecond), float64(res.Events)/res.Duration.Seconds(), peak)
			fmt.Fprintf(a.stdout, "  phases: %s\n", phases)
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
	cmd.Flags().StringVar(&versus, "versus", "", "a database of the same history in clear (seeded by this command without LEDGER_MASTER_KEY): rebuild it and --db-name, sealed, in alternating rounds and print sealed/clear")
	cmd.Flags().IntVar(&rounds, "rounds", 5, "rounds of --versus")
	return cmd
}

// timeRebuild rebuilds db's users projection and returns the result, its
// phases' times and this process's peak RSS during it.
func timeRebuild(ctx context.Context, db *sqlx.DB) (projections.RebuildResult, string, string, error) {
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
		return res, "", "", err
	}
	phases = append(phases, fmt.Sprintf("%s %s", phase, time.Since(phaseStart).Round(time.Millisecond)))
	return res, strings.Join(phases, ", "), peakRSS(), nil
}

// rebuildVersus is bench rebuild --versus: rounds of a rebuild of the clear
// database named clearName (on u's server) and of sealedDB, in alternating
// order, printing each round and the median sealed/clear time. The clear database must hold the
// same number of events and none sealed.
func (a *app) rebuildVersus(ctx context.Context, u *url.URL, sealedDB *sqlx.DB, clearName string, rounds int) error {
	if rounds < 1 {
		return domain.Errorf(domain.EINVALID, "--rounds must be at least 1")
	}
	cu := *u
	cu.Path = "/" + clearName
	clearDB, err := schema.Open(ctx, cu.String(), schema.PoolOptions{MaxOpen: 8})
	if err != nil {
		return err
	}
	defer clearDB.Close()
	var nSealed, nClear int64
	var clearSealed bool
	if err := sealedDB.GetContext(ctx, &nSealed, `SELECT count(*) FROM events`); err != nil {
		return fmt.Errorf("count events: %w", schema.Classify(err))
	}
	if err := clearDB.QueryRowxContext(ctx, `SELECT count(*), EXISTS (SELECT 1 FROM events WHERE body_sealed IS NOT NULL) FROM events`).Scan(&nClear, &clearSealed); err != nil {
		return fmt.Errorf("database %s (--versus): %w", clearName, schema.Classify(err))
	}
	if clearSealed || nClear != nSealed {
		return domain.Errorf(domain.EINVALID, "--versus %s must hold the same history in clear: it holds %d events (sealed: %v), against %d (seed it with LEDGER_MASTER_KEY unset: ledger bench rebuild --db-name %s)", clearName, nClear, clearSealed, nSealed, clearName)
	}
	ratios := make([]float64, 0, rounds)
	for i := range rounds {
		// The order alternates (clear first, then sealed first, ...), so
		// a machine warming up or slowing down weighs on both alike.
		var c, s projections.RebuildResult
		var cphases, cpeak, sphases, speak string
		for _, clear := range []bool{i%2 == 0, i%2 == 1} {
			var err error
			if clear {
				if c, cphases, cpeak, err = timeRebuild(ctx, clearDB); err != nil {
					return fmt.Errorf("rebuild %s: %w", clearName, err)
				}
			} else if s, sphases, speak, err = timeRebuild(ctx, sealedDB); err != nil {
				return err
			}
		}
		r := s.Duration.Seconds() / c.Duration.Seconds()
		ratios = append(ratios, r)
		first := "clear"
		if i%2 == 1 {
			first = "sealed"
		}
		fmt.Fprintf(a.stdout, "round %d (%s first): clear %s (%s; peak RSS %s), sealed %s (%s; peak RSS %s): sealed/clear %.2f\n", i+1, first,
			c.Duration.Round(time.Millisecond), cphases, cpeak, s.Duration.Round(time.Millisecond), sphases, speak, r)
	}
	slices.Sort(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + med) / 2
	}
	fmt.Fprintf(a.stdout, "sealed/clear over %d rounds: median %.2f (min %.2f, max %.2f)\n", rounds, med, ratios[0], ratios[len(ratios)-1])
	return nil
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
