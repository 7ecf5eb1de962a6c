package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/clerk-ledger/clerk-ledger/audit"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

func addServiceFlags(cmd *cobra.Command) {
	cmd.Flags().String("addr", "", "listen address host:port (overrides LEDGER_ADDR; default "+defaultAddr+")")
	cmd.Flags().String("webhook-secret", "", "webhook signing secret(s), space-separated (overrides CLERK_WEBHOOK_SIGNING_SECRET)")
	cmd.Flags().String("clerk-secret-key", "", "Clerk secret key (overrides CLERK_SECRET_KEY)")
	cmd.Flags().String("clerk-jwt-key", "", "Clerk JWT verification key, PEM (overrides CLERK_JWT_KEY)")
	cmd.Flags().String("clerk-publishable-key", "", "Clerk publishable key (overrides PUBLIC_CLERK_PUBLISHABLE_KEY)")
}

func (a *app) serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the service: webhook endpoint, web pages, API and projectors",
		Long: `serve applies pending migrations, then serves POST /api/webhooks/clerk, the web
pages, the JSON API, /healthz, /readyz and /metrics on LEDGER_ADDR, and runs the
projectors in-process. It needs DATABASE_URL and CLERK_WEBHOOK_SIGNING_SECRET.
SIGINT or SIGTERM stops accepting, finishes requests in flight and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, cfg, err := a.serviceSetup(cmd)
			if err != nil {
				return err
			}
			if cfg.DatabaseURL == "" {
				return domain.Errorf(domain.EINVALID, "DATABASE_URL is not set (e.g. postgres://postgres@localhost:5432/ledger)")
			}
			if len(cfg.WebhookSecrets) == 0 {
				return domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set (Clerk dashboard > Webhooks > endpoint > Signing Secret)")
			}
			if cfg.BenchUnsealed, err = cmd.Flags().GetBool(benchUnsealedFlag); err != nil {
				return err
			}
			return a.serve(cmd.Context(), log, cfg, nil)
		},
	}
	addServiceFlags(cmd)
	// Hidden: only bench ingest --unsealed's child sets it (keys.go).
	cmd.Flags().Bool(benchUnsealedFlag, false, "benchmark only: store bodies in clear, without a master key, on a database holding no event")
	cmd.Flags().MarkHidden(benchUnsealedFlag) // an error only for an undefined flag
	return cmd
}

// serviceSetup reads what serve and dev start from: the logger and the
// settings.
func (a *app) serviceSetup(cmd *cobra.Command) (*slog.Logger, config, error) {
	log, err := a.logger(cmd)
	if err != nil {
		return nil, config{}, err
	}
	cfg, err := a.loadConfig(cmd)
	return log, cfg, err
}

// serve runs the service until ctx ends. ready, when not nil, is told the
// listening address once the server accepts connections.
func (a *app) serve(ctx context.Context, log *slog.Logger, cfg config, ready func(addr string)) error {
	verifier, err := svixsig.NewVerifier(cfg.WebhookSecrets)
	if err != nil {
		return err
	}
	undoGC, gcPercent, err := tuneGC(a.env, serveGCPercent, serveMemLimit)
	if err != nil {
		return err
	}
	defer undoGC()
	// LEDGER_CPUPROFILE (bench ingest --cpuprofile) profiles the service
	// until it stops.
	stopProfile, err := startCPUProfile(a.env("LEDGER_CPUPROFILE"))
	if err != nil {
		return err
	}
	defer stopProfile()
	if cfg.Pools == (pools{}) {
		if cfg.Pools, err = loadPools(func(string) string { return "" }); err != nil {
			return err
		}
	}
	// Two pools: ingest (the event store, the projectors, /readyz) keeps
	// connections no read can take; pages and the API read from web, where
	// the audit reads hold at most Pools.AuditConns at once.
	ingest, err := schema.Open(ctx, cfg.DatabaseURL, schema.PoolOptions{MaxOpen: cfg.Pools.IngestConns})
	if err != nil {
		return err
	}
	defer ingest.Close()
	if err := migrate(ctx, log, ingest); err != nil {
		return err
	}
	keys, err := serveKeyring(ctx, log, ingest, cfg.BenchUnsealed)
	if err != nil {
		return err
	}
	db, err := schema.Open(ctx, cfg.DatabaseURL, schema.PoolOptions{MaxOpen: cfg.Pools.WebConns})
	if err != nil {
		return err
	}
	defer db.Close()
	// The event store has a pool of its own, sending bytea parameters (the
	// sealed bodies) in binary: every []byte it binds is bytea or text.
	appends, err := schema.Open(ctx, cfg.DatabaseURL, schema.PoolOptions{MaxOpen: schema.AppendPoolConns, BinaryParameters: true})
	if err != nil {
		return err
	}
	defer appends.Close()
	store := schema.NewStore(appends)
	store.Keys = keys
	// The users projector running here takes the sealed bodies the store
	// just committed from memory instead of reading them back.
	var bodies *schema.Bodies
	if keys != nil && slices.Contains(cfg.Projectors, projections.UsersName) {
		bodies = schema.NewBodies(domain.UserEventTypes(), schema.DefaultBodiesEntries, schema.DefaultBodiesBytes)
		store.Bodies = bodies
	}
	metrics, err := newMetrics(log, db, ingest)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	store.OnCommit = metrics.ObserveCommit
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	sessions, devSignIn, err := webAuth(log, cfg, ln.Addr().String(), cfg.Dev)
	if err != nil {
		return err
	}
	if len(cfg.Projectors) > 0 {
		defer startProjectors(ctx, log, ingest, cfg.Log, cfg.Projectors, bodies)()
	} else {
		log.Info("projectors off in this process (LEDGER_PROJECTORS=off): run `ledger project`")
	}
	// The downstream feed (relay.go), when LEDGER_RELAY_NATS_URL is set.
	if cfg.Relay.URL != "" {
		stopRelay, err := startRelay(ctx, log, ingest, cfg.Relay)
		if err != nil {
			return err
		}
		defer stopRelay()
	}
	logKey, err := cfg.Log.verifierKey("")
	if err != nil {
		return err
	}
	auditSvc := audit.New(audit.Config{DB: db, Verifier: verifier, LogKey: logKey, Auditors: cfg.Auditors, Conns: cfg.Pools.AuditConns})
	// Erasures a crash left half done are finished before anything is served.
	if n, err := auditSvc.RecoverErasures(ctx); err != nil {
		return err
	} else if n > 0 {
		log.Info("finished interrupted erasures", "users", n)
	}
	if cfg.EraseAfterDelete > 0 {
		defer startAutoErase(ctx, log, auditSvc, cfg.EraseAfterDelete)()
	}
	// Clerk's Backend API (clerk.go): first sign-in, scheduled reconcile.
	clerk, err := a.startClerkSync(ctx, log, cfg, ingest)
	if err != nil {
		return err
	}
	defer clerk.stop()
	var firstSignIn handlers.UserFetcher
	if clerk.FirstSignIn != nil {
		firstSignIn = clerk.FirstSignIn
	}
	srv := &http.Server{
		Handler: handlers.NewServer(handlers.Deps{
			Log:            log,
			Verifier:       verifier,
			Store:          metrics.TimeAppends(store),
			Ready:          store,
			Observer:       metrics,
			Metrics:        metrics,
			DB:             db,
			Sessions:       sessions,
			PublishableKey: cfg.PublishableKey,
			DevSignIn:      devSignIn,
			LoopbackOnly:   cfg.Dev,
			Audit:          auditSvc,

			WebhookRateLimit:  cfg.WebhookRateLimit,
			APIRateLimit:      cfg.APIRateLimit,
			TrustedProxies:    cfg.TrustedProxies,
			WebhookBodyMemory: cfg.WebhookBodyMemory,

			ExportIdleTimeout: cfg.Pools.ExportIdleTimeout,
			FirstSignIn:       firstSignIn,
		}),
		// Headers are read before any handler runs, for every connection:
		// keep them small (Go's default allows 1 MiB each). Svix's headers
		// and Clerk's session cookies take a few kB.
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		// Every request's reads open sealed bodies with the master key.
		BaseContext: func(net.Listener) context.Context { return schema.WithKeyring(context.Background(), keys) },
	}
	log.Info("listening", "addr", ln.Addr().String(), "webhook", "http://"+ln.Addr().String()+"/api/webhooks/clerk", "signing_secrets", len(cfg.WebhookSecrets), "webhook_body_memory", cfg.WebhookBodyMemory, "gogc", gcSetting(gcPercent),
		"ingest_conns", cfg.Pools.IngestConns, "web_conns", cfg.Pools.WebConns, "audit_conns", cfg.Pools.AuditConns)
	if ready != nil {
		ready(ln.Addr().String())
	}
	return serveUntilDone(ctx, log, srv, ln, db)
}

// maxHeaderBytes bounds the request line and headers of one request.
const maxHeaderBytes = 64 << 10

// serveUntilDone serves on ln until ctx ends, then shuts down gracefully:
// stop accepting, finish requests in flight (up to 20 s).
func serveUntilDone(ctx context.Context, log *slog.Logger, srv *http.Server, ln net.Listener, db *sqlx.DB) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("stopped")
	return nil
}

func migrate(ctx context.Context, log *slog.Logger, db *sqlx.DB) error {
	res, err := schema.Migrate(ctx, db.DB)
	if err != nil {
		return err
	}
	for _, r := range res {
		log.Info("migration applied", "version", r.Version, "name", r.Name, "duration_ms", r.Duration.Milliseconds())
	}
	return checkXIDCounter(ctx, db)
}

// checkXIDCounter refuses to start on a cluster whose transaction counter is
// behind the ledger's stored xid8 values (a logical dump restored into a new
// cluster): deliveries would be stored where no reader looks.
func checkXIDCounter(ctx context.Context, db *sqlx.DB) error {
	c, err := schema.ReadXIDCounter(ctx, db)
	if err != nil {
		return err
	}
	if c.Behind() {
		return domain.Errorf(domain.ECONFLICT, "this cluster's transaction counter (%d) is behind the ledger's newest transaction id (%d): "+
			"the database was restored from a logical dump into a new cluster; run `ledger migrate xid` for the fix", c.Next, c.MaxStored)
	}
	return nil
}
