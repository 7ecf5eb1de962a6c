package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

type relayBenchOptions struct {
	events      int
	nats        string
	database    string
	ingest      time.Duration
	concurrency int
}

func (a *app) benchRelayCmd() *cobra.Command {
	var o relayBenchOptions
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Measure the relay's events/s to JetStream (against raw async publishes) and its lag under ingest",
		Long: `relay seeds --events synthetic deliveries into a scratch database
(ledger_bench_relay on the DATABASE_URL server, or the dev default), publishes
them with the relay to a fresh stream on --nats and prints events/s; then, in
the same run, reads the same events from the ledger (timed) and publishes
them with raw nats.go async JetStream publishes (same subjects, payloads,
headers and window) to another fresh stream, and prints the ratio.

--ingest D then starts 'ledger serve' with the relay on (LEDGER_RELAY_NATS_URL)
on a second scratch database, sends signed ~1 KB deliveries flat out from
--concurrency senders for D (as 'bench ingest' does), samples the relay's and
the users projector's lag every 250 ms, and checks that the stream holds
every delivery. The bench streams are deleted at the end.`,
		Example: "  ledger bench relay --events 100000 --ingest 15s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.events < 1 || o.concurrency < 1 || o.ingest < 0 {
				return domain.Errorf(domain.EINVALID, "--events and --concurrency must be >= 1, --ingest >= 0")
			}
			o.nats = a.setting(cmd, "nats", "LEDGER_RELAY_NATS_URL")
			if o.nats == "" {
				o.nats = nats.DefaultURL
			}
			o.database = a.setting(cmd, "database-url", "DATABASE_URL")
			return a.benchRelay(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVar(&o.events, "events", 100000, "events to seed and publish")
	cmd.Flags().String("nats", "", "NATS URL (overrides LEDGER_RELAY_NATS_URL; default "+nats.DefaultURL+")")
	cmd.Flags().DurationVar(&o.ingest, "ingest", 0, "also send deliveries flat out for this long with the relay in serve, and report its lag")
	cmd.Flags().IntVarP(&o.concurrency, "concurrency", "c", 32, "concurrent senders for --ingest")
	return cmd
}

// Bench streams: names and subject prefixes no service uses.
const (
	benchStream, benchPrefix             = "LEDGER_BENCH", "ledgerbench"
	benchBaseStream, benchBasePrefix     = "LEDGER_BENCH_BASELINE", "ledgerbenchbase"
	benchIngestStream, benchIngestPrefix = "LEDGER_BENCH_INGEST", "ledgerbenchingest"
)

func (a *app) benchRelay(ctx context.Context, o relayBenchOptions) error {
	nc, err := nats.Connect(o.nats, nats.Timeout(5*time.Second))
	if err != nil {
		return domain.Errorf(domain.EUNAVAILABLE, "NATS at %s: %v", relay.RedactURL(o.nats), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(relay.DefaultWindow))
	if err != nil {
		return err
	}
	for _, s := range []string{benchStream, benchBaseStream, benchIngestStream} {
		_ = js.DeleteStream(ctx, s)
		defer js.DeleteStream(context.Background(), s)
	}

	db, err := openBenchDB(ctx, o.database, "ledger_bench_relay")
	if err != nil {
		return err
	}
	defer db.Close()
	h, err := clerkgen.NewHistory(clerkgen.HistoryOptions{Users: max(1, o.events/10), Events: o.events, Seed: rand.Uint64()}, nil)
	if err != nil {
		return domain.Errorf(domain.EINVALID, "%v", err)
	}
	if err := seedHistory(ctx, db, h, discard{}); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "bench relay: %d events seeded; NATS %s\n", h.Len(), relay.RedactURL(o.nats))

	rel, err := relay.New(relay.Config{URL: o.nats, Stream: benchStream, Prefix: benchPrefix}, nil)
	if err != nil {
		return err
	}
	defer rel.Close()
	start := time.Now()
	run := projections.NewRunner(db, nil, rel)
	run.BatchSize = relay.BatchSize
	if err := run.CatchUp(ctx); err != nil {
		return err
	}
	d := time.Since(start)
	relayRate := float64(h.Len()) / d.Seconds()
	if n, err := streamMsgs(ctx, js, benchStream); err != nil || n != uint64(h.Len()) {
		return fmt.Errorf("bench relay: the stream holds %d messages, want %d (%v)", n, h.Len(), err)
	}
	fmt.Fprintf(a.stdout, "relay:    %8.0f events/s   (%d in %s, batches of %d, window %d)\n", relayRate, h.Len(), d.Round(time.Millisecond), relay.BatchSize, relay.DefaultWindow)

	start = time.Now()
	events, err := readLedger(ctx, db)
	if err != nil {
		return err
	}
	readRate := float64(len(events)) / time.Since(start).Seconds()
	baseRate, err := rawPublish(ctx, js, events)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "baseline: %8.0f msgs/s     raw nats.go PublishMsgAsync of the same payloads and headers, window %d (ledger read alone: %.0f events/s)\n",
		baseRate, relay.DefaultWindow, readRate)
	fmt.Fprintf(a.stdout, "ratio:    %.2f (relay / raw publish); %.2f (relay / reading then publishing, 1/(1/read+1/publish))\n",
		relayRate/baseRate, relayRate*(1/readRate+1/baseRate))

	if o.ingest > 0 {
		return a.benchRelayIngest(ctx, o, js)
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func streamMsgs(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return s.CachedInfo().State.Msgs, nil
}

func readLedger(ctx context.Context, db *sqlx.DB) ([]domain.Event, error) {
	var out []domain.Event
	for c := (schema.Cursor{}); ; {
		evs, err := schema.ReadAfter(ctx, db, c, 2000)
		if err != nil {
			return nil, err
		}
		if len(evs) == 0 {
			return out, nil
		}
		out = append(out, evs...)
		c = schema.After(evs[len(evs)-1])
	}
}

// rawPublish publishes events with nats.go's PublishMsgAsync, as the relay
// would (subjects, payloads, headers), to a fresh stream, and returns
// messages/s until the last PubAck.
func rawPublish(ctx context.Context, js jetstream.JetStream, events []domain.Event) (float64, error) {
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: benchBaseStream, Subjects: []string{benchBasePrefix + ".>"}, Duplicates: relay.DefaultDuplicates}); err != nil {
		return 0, err
	}
	msgs := make([]*nats.Msg, len(events))
	for i, e := range events {
		m := nats.NewMsg(relay.Subject(benchBasePrefix, e.Type))
		m.Data = e.Body
		m.Header.Set(nats.MsgIdHdr, e.DeliveryID)
		m.Header.Set(relay.HeaderDeliveryID, e.DeliveryID)
		m.Header.Set(relay.HeaderPosition, strconv.FormatInt(e.Position, 10))
		m.Header.Set(relay.HeaderType, e.Type)
		if e.UserID != "" {
			m.Header.Set(relay.HeaderUserID, e.UserID)
		}
		m.Header.Set(relay.HeaderOccurredAt, e.OccurredAt.Format(time.RFC3339Nano))
		msgs[i] = m
	}
	start := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m); err != nil {
			return 0, fmt.Errorf("baseline publish: %w", err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, errors.New("baseline: PubAcks missing after a minute")
	}
	return float64(len(msgs)) / time.Since(start).Seconds(), nil
}

// benchRelayIngest sends deliveries flat out to a serve running the relay
// and reports the relay's lag.
func (a *app) benchRelayIngest(ctx context.Context, o relayBenchOptions, js jetstream.JetStream) error {
	dsn, err := benchDatabase(ctx, o.database, "ledger_bench_relay_ingest")
	if err != nil {
		return err
	}
	secret := clerkgen.NewSecret()
	child, err := startChildService(ctx, dsn, secret, "LEDGER_RELAY_NATS_URL="+o.nats, "LEDGER_RELAY_STREAM="+benchIngestStream, "LEDGER_RELAY_PREFIX="+benchIngestPrefix)
	if err != nil {
		return err
	}
	defer child.stop()
	target := "http://" + child.addr + "/api/webhooks/clerk"
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		return err
	}
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	lag := sampleLag(ctx, db, relay.Name, projections.UsersName)
	p := newPayloads()
	client, err := newDeliverer(target, signer, o.concurrency)
	if err != nil {
		return err
	}
	defer client.close()
	var non2xx atomic.Int64
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(a.stdout, "ingest with the relay in serve: %d senders for %s -> %s\n", o.concurrency, o.ingest, target)
	res := runLoad(ctx, o.concurrency, o.ingest, func(w, i int) error {
		return postDelivery(ctx, client, fmt.Sprintf("msg_%s_%d_%d", runID, w, i), p.body(fmt.Sprintf("user_r%s%04d%07d", runID, w, i)), &non2xx)
	})
	worst := lag.stop()
	fmt.Fprintf(a.stdout, "ingest:   %8.0f deliveries/s  p50 %s  p99 %s  non-2xx %d  errors %d  (%d in %s)\n",
		float64(res.ok)/res.elapsed.Seconds(), ms(res.lat.quantile(0.5)), ms(res.lat.quantile(0.99)), non2xx.Load(), res.failed, res.ok, res.elapsed.Round(time.Millisecond))
	caught := "not within 30s"
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if st, err := projections.ReadStatus(ctx, db, relay.Name); err == nil && lagOf(st, relay.Name).LagEvents == 0 && lagOf(st, relay.Name).Started {
			caught = time.Since(start).Round(time.Millisecond).String()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{relay.Name, projections.UsersName} {
		fmt.Fprintf(a.stdout, "%-6s lag while sending (sampled every 250 ms): max %d events, max %.2f s\n", name, worst[name].events, worst[name].seconds)
	}
	fmt.Fprintf(a.stdout, "relay caught up %s after the last delivery\n", caught)
	var stored int64
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM events`).Scan(&stored); err != nil {
		return err
	}
	n, err := streamMsgs(ctx, js, benchIngestStream)
	if err != nil {
		return err
	}
	if n != uint64(stored) {
		return fmt.Errorf("bench relay: the stream holds %d messages, the ledger %d events", n, stored)
	}
	fmt.Fprintf(a.stdout, "stream %s holds all %d deliveries\n", benchIngestStream, n)
	return nil
}

func lagOf(st []projections.Status, name string) projections.Status {
	for _, s := range st {
		if s.Name == name {
			return s
		}
	}
	return projections.Status{}
}

type worstLag struct {
	events  int64
	seconds float64
}

type lagSamples struct {
	stop func() map[string]worstLag
}

// sampleLag reads the status of the named projectors every 250 ms until
// stop, which returns the worst lag of each.
func sampleLag(ctx context.Context, db *sqlx.DB, names ...string) lagSamples {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan map[string]worstLag, 1)
	go func() {
		worst := map[string]worstLag{}
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				done <- worst
				return
			case <-t.C:
			}
			st, err := projections.ReadStatus(ctx, db, names...)
			if err != nil {
				continue
			}
			for _, name := range names {
				s := lagOf(st, name)
				w := worst[name]
				worst[name] = worstLag{max(w.events, s.LagEvents), max(w.seconds, s.LagSeconds)}
			}
		}
	}()
	return lagSamples{stop: func() map[string]worstLag { cancel(); return <-done }}
}
