package main

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

// The downstream feed (issue 16): `ledger relay`, and the relay inside
// `serve` when LEDGER_RELAY_NATS_URL is set. Its settings:
//
//	LEDGER_RELAY_NATS_URL    NATS URL(s), comma-separated (flag --nats)
//	LEDGER_RELAY_STREAM      JetStream stream, default LEDGER (flag --stream)
//	LEDGER_RELAY_PREFIX      subject prefix, default ledger (flag --prefix)
//	LEDGER_RELAY_DUPLICATES  de-duplication window of a stream it creates, default 2m
//	LEDGER_RELAY_REPLICAS    replicas of a stream it creates, default 1
//	LEDGER_RELAY_MAX_AGE     message age limit of a stream it creates, default none

// relayConfig reads the relay's settings from the environment (and the
// flags of `ledger relay`, which win). URL is empty when the relay is off.
func (a *app) relayConfig(cmd *cobra.Command) (relay.Config, error) {
	c := relay.Config{
		URL:    a.setting(cmd, "nats", "LEDGER_RELAY_NATS_URL"),
		Stream: a.setting(cmd, "stream", "LEDGER_RELAY_STREAM"),
		Prefix: a.setting(cmd, "prefix", "LEDGER_RELAY_PREFIX"),
	}
	if c.Stream == "" {
		c.Stream = relay.DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = relay.DefaultPrefix
	}
	if err := relay.CheckStreamName(c.Stream); err != nil {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_RELAY_STREAM: %v", err)
	}
	if err := relay.CheckPrefix(c.Prefix); err != nil {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_RELAY_PREFIX: %v", err)
	}
	duration := func(name string, def time.Duration) (time.Duration, error) {
		v := strings.TrimSpace(a.env(name))
		if v == "" {
			return def, nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, domain.Errorf(domain.EINVALID, "%s %q is not a duration such as 2m or 720h", name, v)
		}
		return d, nil
	}
	var err error
	if c.Duplicates, err = duration("LEDGER_RELAY_DUPLICATES", relay.DefaultDuplicates); err != nil {
		return c, err
	}
	if c.Duplicates == 0 {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_RELAY_DUPLICATES must be more than 0")
	}
	if c.MaxAge, err = duration("LEDGER_RELAY_MAX_AGE", 0); err != nil {
		return c, err
	}
	c.Replicas = 1
	if v := strings.TrimSpace(a.env("LEDGER_RELAY_REPLICAS")); v != "" {
		if c.Replicas, err = strconv.Atoi(v); err != nil || c.Replicas < 1 || c.Replicas > 5 {
			return c, domain.Errorf(domain.EINVALID, "LEDGER_RELAY_REPLICAS %q is not 1 to 5", v)
		}
	}
	return c, nil
}

func (a *app) relayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Publish the ledger, in ledger order, to NATS JetStream (the downstream feed)",
		Long: `relay applies pending migrations, then publishes every ledger event, in ledger
order, to NATS JetStream until SIGINT or SIGTERM: one message per event on
<prefix>.<type> (e.g. ledger.user.updated), the payload the exact webhook body,
headers delivery_id, position, type, user_id, occurred_at and Nats-Msg-Id (the
delivery id). It creates the stream (subjects <prefix>.>) when missing, or uses
an existing one with exactly those subjects.

The relay is a projector: its checkpoint moves only after JetStream has stored
each message, and ` + "`ledger projections status`" + ` shows it. Several relays (and
services with LEDGER_RELAY_NATS_URL) may run at once: one publishes at a time.
NATS being down is no error: the relay waits and retries. A stream with other
subjects stops it at start with a message naming them.`,
		Example: "  ledger relay --nats nats://127.0.0.1:4222\n  ledger relay --nats nats://n1:4222,nats://n2:4222 --stream LEDGER --prefix ledger",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := a.logger(cmd)
			if err != nil {
				return err
			}
			cfg, err := a.relayConfig(cmd)
			if err != nil {
				return err
			}
			if cfg.URL == "" {
				return domain.Errorf(domain.EINVALID, "LEDGER_RELAY_NATS_URL is not set (or --nats nats://127.0.0.1:4222)")
			}
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 2})
			if err != nil {
				return err
			}
			defer db.Close()
			if err := migrate(ctx, log, db); err != nil {
				return err
			}
			rel, err := relay.New(cfg, log)
			if err != nil {
				return err
			}
			defer rel.Close()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = rel.Check(cctx)
			cancel()
			switch {
			case err == nil:
			case domain.ErrorCode(err) == domain.EUNAVAILABLE && ctx.Err() == nil:
				log.Warn("NATS is not reachable yet; the relay waits and retries", "nats", relay.RedactURL(cfg.URL), "err", err)
			default:
				return err
			}
			log.Info("relay started", "nats", relay.RedactURL(cfg.URL), "stream", cfg.Stream, "subjects", cfg.Prefix+".>")
			run := projections.NewRunner(db, log, rel)
			run.BatchSize = relay.BatchSize
			run.Run(ctx)
			return nil
		},
	}
	cmd.Flags().String("nats", "", "NATS URL(s), comma-separated (overrides LEDGER_RELAY_NATS_URL)")
	cmd.Flags().String("stream", "", "JetStream stream (overrides LEDGER_RELAY_STREAM; default "+relay.DefaultStream+")")
	cmd.Flags().String("prefix", "", "subject prefix (overrides LEDGER_RELAY_PREFIX; default "+relay.DefaultPrefix+")")
	return cmd
}

// startRelay runs the relay on db in the background (inside serve) and
// returns the function that stops it after its current batch and closes its
// NATS connection. NATS being down, or the stream being wrong, does not
// stop the service: the relay logs why and retries.
func startRelay(ctx context.Context, log *slog.Logger, db *sqlx.DB, cfg relay.Config) (stop func(), err error) {
	rel, err := relay.New(cfg, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		if err := rel.Check(cctx); err != nil && ctx.Err() == nil {
			log.Error("relay: the stream is not ready; retrying with every batch", "nats", relay.RedactURL(cfg.URL), "err", err)
		}
		ccancel()
		run := projections.NewRunner(db, log, rel)
		run.BatchSize = relay.BatchSize
		run.Run(ctx)
	}()
	log.Info("relay on", "nats", relay.RedactURL(cfg.URL), "stream", cfg.Stream, "subjects", cfg.Prefix+".>")
	return func() {
		cancel()
		<-done
		rel.Close()
	}, nil
}
