package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

// benchImportCmd is `ledger bench import`.
func (a *app) benchImportCmd() *cobra.Command {
	var users, writers int
	var dbName, cpuProfile string
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Time `ledger import users` of N users from a local fake Backend API, against fetching alone",
		Long: `import starts a fake Clerk Backend API (clerkapi/clerkapitest: realistic user
objects, Clerk's JSON) with --users users in a child process (so its memory is
not this process's), then in this process, against a fresh database --db-name
on the DATABASE_URL server, with no rate limit:

  fetch     pages through every user (500 a page) and parses them, storing nothing: the baseline
  import    ledger import users: the same pages, each stored with one multi-row INSERT
  again     the same import once more: every user unchanged, nothing stored

and prints users/s of each, import as a ratio of fetch, and this process's peak
RSS during the import.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if users < 1 {
				return domain.Errorf(domain.EINVALID, "--users must be at least 1")
			}
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			return a.benchImport(cmd.Context(), dsn, dbName, users, writers, cpuProfile)
		},
	}
	cmd.Flags().IntVar(&users, "users", 100_000, "users on the fake Backend API")
	cmd.Flags().StringVar(&dbName, "db-name", "ledger_bench_import", "scratch database (dropped and created)")
	cmd.Flags().IntVar(&writers, "writers", 2, "pages stored at once (clerksync.Syncer.Writers)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the import to this file (go tool pprof)")
	return cmd
}

// fakeAPICmd is the hidden `ledger bench fake-clerk-api`: it serves a
// clerkapitest server with --users users, prints "<url> <secret key>" on
// stdout and serves until its stdin closes.
func (a *app) fakeAPICmd() *cobra.Command {
	var users int
	cmd := &cobra.Command{
		Use:    "fake-clerk-api",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s := clerkapitest.New(clerkapitest.Options{Users: users, Seed: 1})
			defer s.Close()
			fmt.Fprintln(a.stdout, s.URL(), s.SecretKey())
			_, _ = io.Copy(io.Discard, os.Stdin)
			return nil
		},
	}
	cmd.Flags().IntVar(&users, "users", 100_000, "users")
	return cmd
}

func (a *app) benchImport(ctx context.Context, dsn, dbName string, users, writers int, cpuProfile string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	child := exec.CommandContext(ctx, exe, "bench", "fake-clerk-api", "--users", fmt.Sprint(users))
	child.Stderr = a.stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		return err
	}
	out, err := child.StdoutPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := child.Start(); err != nil {
		return fmt.Errorf("start the fake Backend API: %w", err)
	}
	defer func() { stdin.Close(); _ = child.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the fake Backend API did not start: %w", err)
	}
	baseURL, key, _ := strings.Cut(strings.TrimSpace(line), " ")
	fmt.Fprintf(a.stdout, "fake Backend API with %d users ready in %s\n", users, time.Since(start).Round(time.Millisecond))

	api, err := clerkapi.New(clerkapi.Config{SecretKey: key, BaseURL: baseURL, RateLimit: rate.Inf})
	if err != nil {
		return err
	}
	db, err := openBenchDB(ctx, dsn, dbName)
	if err != nil {
		return err
	}
	defer db.Close()

	// Baseline: the same pages fetched and parsed, nothing stored.
	start = time.Now()
	var p clerkapi.Page
	fetched := 0
	for off := 0; ; off = p.Next() {
		if err := api.ListUsersInto(ctx, &p, off, clerkapi.MaxLimit); err != nil {
			return err
		}
		fetched += len(p.Users)
		if p.Last() {
			break
		}
	}
	fetch := time.Since(start)
	fmt.Fprintf(a.stdout, "fetch:  %d users in %s: %.0f users/s\n", fetched, fetch.Round(time.Millisecond), float64(fetched)/fetch.Seconds())

	s := clerksync.New(db, api, nil)
	s.Writers = writers
	resetPeakRSS()
	stopProfile, err := startCPUProfile(cpuProfile)
	if err != nil {
		return err
	}
	sum, err := s.ImportUsers(ctx, clerksync.ImportOptions{})
	stopProfile()
	if err != nil {
		return err
	}
	rss := peakRSS()
	imp := float64(sum.Imported+sum.Unchanged) / sum.Duration.Seconds()
	fmt.Fprintf(a.stdout, "import: %d imported, %d unchanged, %d failed in %s with %d writers: %.0f users/s, peak RSS %s; ratio to fetch %.2f\n",
		sum.Imported, sum.Unchanged, sum.Failed, sum.Duration.Round(time.Millisecond), writers, imp, rss, imp/(float64(fetched)/fetch.Seconds()))
	again, err := s.ImportUsers(ctx, clerksync.ImportOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "again:  %d imported, %d unchanged in %s: %.0f users/s\n",
		again.Imported, again.Unchanged, again.Duration.Round(time.Millisecond), float64(again.Imported+again.Unchanged)/again.Duration.Seconds())
	return nil
}

// openBenchDB creates the fresh scratch database name on base's server
// (benchDatabase), migrates it and opens a pool of 4 on it.
func openBenchDB(ctx context.Context, base, name string) (*sqlx.DB, error) {
	dsn, err := benchDatabase(ctx, base, name)
	if err != nil {
		return nil, err
	}
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 4})
	if err != nil {
		return nil, err
	}
	if _, err := schema.Migrate(ctx, db.DB); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// startCPUProfile writes a CPU profile to path until stop is called; with
// an empty path it does nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
