package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

func (a *app) seedCmd() *cobra.Command {
	var users, events int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Load a realistic synthetic history straight into the ledger (COPY), for benchmarks and demos",
		Long: `seed generates a synthetic Clerk history for --users users in --events deliveries
and loads it straight into the events table with COPY, bypassing the webhook
endpoint. Every user is created; 5% are deleted in the end; the rest of the user
events are updates (names, emails, usernames, metadata change); 10% of the
deliveries are session.created or email.created; 2% repeat an earlier event's
content under a new svix-id; the delivery order is shuffled. Bodies are signed
with the first CLERK_WEBHOOK_SIGNING_SECRET when set (else with a new secret,
printed). The same --seed gives the same history, so seeding one database twice
with the same --seed fails on the duplicate delivery ids; the default seed is
random. Applies pending migrations first.`,
		Example: `  ledger seed --users 100000 --events 1000000`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dsn, err := a.requireDatabaseURL(cmd)
			if err != nil {
				return err
			}
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return err
			}
			secret := ""
			if len(cfg.WebhookSecrets) > 0 {
				secret = cfg.WebhookSecrets[0]
			} else {
				secret = clerkgen.NewSecret()
				fmt.Fprintf(a.stdout, "signing with a new secret %s (CLERK_WEBHOOK_SIGNING_SECRET is not set)\n", secret)
			}
			signer, err := clerkgen.NewSigner(secret)
			if err != nil {
				return domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is malformed")
			}
			if seed == 0 {
				seed = rand.Uint64()
			}
			h, err := clerkgen.NewHistory(clerkgen.HistoryOptions{Users: users, Events: events, Seed: seed}, signer)
			if err != nil {
				return domain.Errorf(domain.EINVALID, "%v", err)
			}
			db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 4})
			if err != nil {
				return err
			}
			defer db.Close()
			if _, err := schema.Migrate(cmd.Context(), db.DB); err != nil {
				return err
			}
			start := time.Now()
			if err := seedHistory(cmd.Context(), db, h, a.stdout); err != nil {
				return err
			}
			d := time.Since(start)
			fmt.Fprintf(a.stdout, "seeded %d deliveries about %d users (seed %d) in %s: %.0f events/s\n",
				h.Len(), users, seed, d.Round(time.Millisecond), float64(h.Len())/d.Seconds())
			return nil
		},
	}
	cmd.Flags().IntVar(&users, "users", 1000, "number of Clerk users")
	cmd.Flags().IntVar(&events, "events", 10000, "number of deliveries in all")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed (default: random)")
	cmd.Flags().String("webhook-secret", "", "signing secret (overrides CLERK_WEBHOOK_SIGNING_SECRET)")
	return cmd
}

// seedHistory builds h's deliveries on every core and COPYs them into the
// ledger in chunks, one transaction per chunk, in delivery order. It prints a
// progress line per 10% to out.
func seedHistory(ctx context.Context, db *sqlx.DB, h *clerkgen.History, out io.Writer) error {
	const chunk = 10000
	n := h.Len()
	chunks := (n + chunk - 1) / chunk
	type result struct {
		ds  []schema.Backdated
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One slot per chunk, filled by the generators, drained in order by the
	// writer; at most `ahead` chunks are in memory at once.
	slots := make([]chan result, chunks)
	for i := range slots {
		slots[i] = make(chan result, 1)
	}
	ahead := make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	next := make(chan int)
	go func() {
		defer close(next)
		for c := range chunks {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case next <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for c := range next {
				lo, hi := c*chunk, min(n, (c+1)*chunk)
				ds := make([]schema.Backdated, 0, hi-lo)
				var err error
				for i := lo; i < hi && err == nil; i++ {
					var d domain.Delivery
					if d, err = h.Delivery(i); err == nil {
						// Svix delivers within a few seconds.
						ds = append(ds, schema.Backdated{Delivery: d, ReceivedAt: d.OccurredAt.Add(time.Duration(i%2000) * time.Millisecond)})
					}
				}
				slots[c] <- result{ds, err}
			}
		})
	}
	defer wg.Wait()
	defer cancel()
	done := 0
	for c := range chunks {
		var r result
		select {
		case r = <-slots[c]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-ahead
		if r.err != nil {
			return fmt.Errorf("seed: build delivery: %w", r.err)
		}
		if err := copyChunk(ctx, db, r.ds); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		before := done * 10 / n
		done += len(r.ds)
		if done*10/n != before {
			fmt.Fprintf(out, "seed: %d/%d deliveries\n", done, n)
		}
	}
	return nil
}

func copyChunk(ctx context.Context, db *sqlx.DB, ds []schema.Backdated) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", schema.Classify(err))
	}
	defer tx.Rollback()
	if err := schema.CopyDeliveries(ctx, tx, ds); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", schema.Classify(err))
	}
	return nil
}
