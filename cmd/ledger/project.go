package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

func (a *app) projectCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "project",
		Short: "Run the projectors alone (users, tree) until interrupted",
		Long: `project applies pending migrations, then runs the projectors (users and the
Merkle tree sealer) against DATABASE_URL until SIGINT or SIGTERM, without the
web service, and with LEDGER_LOG_KEY signs checkpoints of the tree. serve
and dev run them in-process already; run this to scale them apart.
LEDGER_PROJECTORS lists the ones this process runs (e.g. users,tree; all by
default), so they can be split over processes. Any number of project processes (and services) may run against one
database: each batch commits with its checkpoint under a per-projector lock, so
no event is ever applied twice. With LEDGER_METRICS_ADDR (e.g. 127.0.0.1:9464)
it serves GET /metrics (the projectors, the tree, the Go runtime and the
pool, as serve's) and GET /healthz there; keep it to the private network.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := a.logger(cmd)
			if err != nil {
				return err
			}
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			lc, err := loadLogConfig(a.env)
			if err != nil {
				return err
			}
			names, err := parseProjectors(a.env("LEDGER_PROJECTORS"))
			if err != nil {
				return err
			}
			if len(names) == 0 {
				return domain.Errorf(domain.EINVALID, "LEDGER_PROJECTORS is off: ledger project would run no projector (unset it, or list the ones to run here)")
			}
			ctx := cmd.Context()
			db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 4})
			if err != nil {
				return err
			}
			defer db.Close()
			if err := migrate(ctx, log, db); err != nil {
				return err
			}
			if _, err := requireKeyring(ctx, db); err != nil {
				return err
			}
			// Erasures a crash left half done are finished first.
			if n, err := audit.New(audit.Config{DB: db}).RecoverErasures(ctx); err != nil {
				return err
			} else if n > 0 {
				log.Info("finished interrupted erasures", "users", n)
			}
			stopMetrics, err := serveMetrics(ctx, log, db, a.env("LEDGER_METRICS_ADDR"))
			if err != nil {
				return err
			}
			defer stopMetrics()
			stop := startProjectors(ctx, log, db, lc, names, nil)
			<-ctx.Done()
			stop()
			return nil
		},
	}
}

// startProjectors runs the default projectors named in names
// (parseProjectors) on db in the background, and, when the tree sealer is
// one of them, with lc's key the checkpoint signer; it returns the function
// that stops them and waits until they have stopped (a batch in flight is
// rolled back, never half applied). bodies, when not nil, is the event
// store's (schema.Store.Bodies) in this process: the users projector takes
// its bodies from there.
func startProjectors(ctx context.Context, log *slog.Logger, db *sqlx.DB, lc logConfig, names []string, bodies *schema.Bodies) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var run []projections.Projector
	for _, p := range projections.Default() {
		if !slices.Contains(names, p.Name()) {
			continue
		}
		if u, ok := p.(*projections.Users); ok {
			u.Bodies = bodies
		}
		run = append(run, p)
	}
	if len(run) < len(projections.Default()) {
		log.Info("running some projectors in this process (LEDGER_PROJECTORS)", "projectors", strings.Join(names, ","))
	}
	var wg sync.WaitGroup
	wg.Go(func() { projections.NewRunner(db, log, run...).Run(ctx) })
	switch {
	case !slices.Contains(names, projections.TreeName):
	case lc.Signer != nil:
		cp := projections.NewCheckpointer(db, log, lc.Signer, lc.Origin)
		cp.Dir, cp.Interval = lc.Dir, lc.Interval
		wg.Go(func() { cp.Run(ctx) })
	default:
		log.Warn("LEDGER_LOG_KEY is not set: the Merkle tree is built but no checkpoint is signed")
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// serveMetrics serves handlers.MetricsRoutes on addr in the background
// (nothing for an empty addr) and returns the function that shuts it down.
// Errors: EINVALID when addr cannot be listened on (one line naming
// LEDGER_METRICS_ADDR), before any projector starts.
func serveMetrics(ctx context.Context, log *slog.Logger, db *sqlx.DB, addr string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	m, err := newMetrics(log, db, nil)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_METRICS_ADDR %q: %v", addr, err)
	}
	srv := &http.Server{Handler: handlers.MetricsRoutes(m), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", addr, "error", err)
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
		<-done
	}, nil
}
