package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/relay/natstest"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// requireFeed fails unless the stream holds every ledger event exactly once,
// in ledger order, with its exact body and its delivery id as Nats-Msg-Id.
func requireFeed(t *testing.T, db *sqlx.DB, js jetstream.JetStream, stream string) {
	t.Helper()
	var events []domain.Event
	for c := (schema.Cursor{}); ; {
		evs, err := schema.ReadAfter(withTestKeys(context.Background()), db, c, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		events = append(events, evs...)
		c = schema.After(evs[len(evs)-1])
	}
	msgs := natstest.Messages(t, js, stream)
	if len(msgs) != len(events) {
		t.Errorf("stream %s holds %d messages, the ledger %d events", stream, len(msgs), len(events))
	}
	bad := 0
	for i := range min(len(msgs), len(events)) {
		m, e := msgs[i], events[i]
		if m.Header.Get(relay.HeaderPosition) != strconv.FormatInt(e.Position, 10) || m.Header.Get(nats.MsgIdHdr) != e.DeliveryID || !bytes.Equal(m.Data, e.Body) {
			if bad++; bad <= 5 {
				t.Errorf("message %d (seq %d) is event %s (msg id %s), want event %d (%s) with its body", i, m.Seq,
					m.Header.Get(relay.HeaderPosition), m.Header.Get(nats.MsgIdHdr), e.Position, e.DeliveryID)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d messages out of ledger order, duplicated or wrong", bad)
	}
}

// TestFaultRelayKilledMidStream SIGKILLs `ledger relay` three times while it
// publishes a 40k-event ledger, each time once it has published more than
// the time before, and restarts it: in the end the stream holds each event
// exactly once, in ledger order (no gap, no duplicate: a batch JetStream
// acknowledged before the kill is not published again), and the relay's
// checkpoint counts each event once.
func TestFaultRelayKilledMidStream(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn}
	if out, errOut, code := runLedger(t, env, "seed", "--users", "4000", "--events", "40000", "--seed", "16"); code != 0 {
		t.Fatalf("seed: exit %d\n%s%s", code, out, errOut)
	}
	db := schematest.Open(t, dsn)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	const total = 40000
	relayEnv := map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "info"}
	var logs []string
	for kill := 1; kill <= 3; kill++ {
		before := natstest.Count(t, js, relay.DefaultStream)
		r := startLedger(t, relayEnv, "relay", "--nats", srv.URL())
		waitFor(t, 30*time.Second, "the relay publishing past the last kill", func() (bool, string) {
			n := natstest.Count(t, js, relay.DefaultStream)
			return n > before+2000, fmt.Sprintf("stream holds %d, %d before", n, before)
		})
		r.kill()
		n := natstest.Count(t, js, relay.DefaultStream)
		applied, _ := checkpoint(t, db, relay.Name)
		if n >= total {
			t.Fatalf("kill %d came after the relay had published everything (%d): not mid-stream", kill, n)
		}
		t.Logf("kill %d: stream holds %d messages, relay checkpoint applied %d", kill, n, applied)
		logs = append(logs, r.logs.String())
	}
	r := startLedger(t, relayEnv, "relay", "--nats", srv.URL())
	waitFor(t, 60*time.Second, "the relay publishing everything", func() (bool, string) {
		n := natstest.Count(t, js, relay.DefaultStream)
		applied, _ := checkpoint(t, db, relay.Name)
		return n >= total && applied >= total, fmt.Sprintf("stream holds %d, applied %d of %d", n, applied, total)
	})
	r.stop()
	requireFeed(t, db, js, relay.DefaultStream)
	if applied, failed := checkpoint(t, db, relay.Name); applied != total || failed != 0 {
		t.Errorf("relay checkpoint: applied %d, failed %d; want %d, 0", applied, failed, total)
	}
	resumed := 0
	for _, l := range append(logs, r.logs.String()) {
		resumed += strings.Count(l, "events already in the stream skipped")
	}
	t.Logf("%d of 3 restarts resumed inside a batch JetStream had stored before the kill (skipping what it held)", resumed)
}

// TestFaultRelayNATSDown kills the NATS server under a `serve` running the
// relay: every delivery is still answered 2xx and stored (ingest does not
// wait for NATS), `projections status` shows the relay's NATS error and no
// poison event; once NATS is back the stream catches up, each event once,
// in ledger order.
func TestFaultRelayNATSDown(t *testing.T) {
	dsn := schematest.NewURL(t)
	secret := clerkgen.NewSecret()
	srv := natstest.Start(t)
	addr := freeAddr(t)
	svc := startLedger(t, map[string]string{
		"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": secret, "LEDGER_ADDR": addr, "LOG_LEVEL": "warn",
		"LEDGER_RELAY_NATS_URL": srv.URL(),
	}, "serve")
	waitFor(t, 30*time.Second, "serve ready", func() (bool, string) {
		res, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == 200, res.Status
	})
	db := schematest.Open(t, dsn)
	_, js := srv.Connect(t)
	ds := history(t, 100, 600, 9)
	s := newSender(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sendAll(t, ctx, s, addr, ds[:200])
	waitFor(t, 20*time.Second, "the relay publishing the first deliveries", func() (bool, string) {
		n := natstest.Count(t, js, relay.DefaultStream)
		return n == 200, fmt.Sprintf("stream holds %d", n)
	})

	srv.Kill()
	start := time.Now()
	sendAll(t, ctx, s, addr, ds[200:])
	if s.failures.Load() != 0 {
		t.Errorf("with NATS down, %d delivery attempts failed (%v): ingest must not depend on NATS", s.failures.Load(), s.codes)
	}
	t.Logf("400 deliveries with NATS down in %s, all 2xx", time.Since(start).Round(time.Millisecond))
	waitFor(t, 20*time.Second, "status showing the relay's NATS error", func() (bool, string) {
		st := readStatus(t, dsn)[relay.Name]
		return strings.Contains(st.LastError, "NATS") && st.LagEvents == 400, fmt.Sprintf("last error %q, lag %d", st.LastError, st.LagEvents)
	})
	if st := readStatus(t, dsn)[relay.Name]; st.Failed != 0 || st.LastFailure != nil {
		t.Errorf("NATS down counted as poison: failed %d, last failure %+v", st.Failed, st.LastFailure)
	}
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{`ledger_projector_lag_events{projector="relay"} 400`, `ledger_projector_failed_total{projector="relay"} 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics while NATS is down lacks %s", want)
		}
	}

	srv.Restart()
	_, js = srv.Connect(t)
	waitFor(t, 30*time.Second, "the relay catching up after NATS is back", func() (bool, string) {
		n := natstest.Count(t, js, relay.DefaultStream)
		return n == 600, fmt.Sprintf("stream holds %d", n)
	})
	requireFeed(t, db, js, relay.DefaultStream)
	svc.stop()
	if applied, failed := checkpoint(t, db, relay.Name); applied != 600 || failed != 0 {
		t.Errorf("relay checkpoint: applied %d, failed %d; want 600, 0", applied, failed)
	}
}

// TestRelayCommandSettings: a stream with other subjects stops `ledger
// relay` at start with one line naming it; malformed settings stop it and
// serve with the variable named.
func TestRelayCommandSettings(t *testing.T) {
	dsn := schematest.NewURL(t)
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dsn}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"relay", "--nats", srv.URL(), "--stream", "ORDERS"}, envOf(env), &out, &errOut)
	if err == nil || !strings.HasPrefix(err.Error(), `JetStream stream "ORDERS" has subjects ["orders.>"], which do not cover ledger.>`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("relay on a stream with other subjects: %v", err)
	}
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{}, []string{"relay"}, "LEDGER_RELAY_NATS_URL is not set"},
		{map[string]string{"LEDGER_RELAY_STREAM": "a.b"}, []string{"relay", "--nats", srv.URL()}, `LEDGER_RELAY_STREAM: stream name "a.b"`},
		{map[string]string{}, []string{"relay", "--nats", srv.URL(), "--prefix", "ledger.>"}, `LEDGER_RELAY_PREFIX: subject prefix "ledger.>"`},
		{map[string]string{"LEDGER_RELAY_DUPLICATES": "soon"}, []string{"relay", "--nats", srv.URL()}, `LEDGER_RELAY_DUPLICATES "soon" is not a duration`},
		{map[string]string{"LEDGER_RELAY_REPLICAS": "9"}, []string{"relay", "--nats", srv.URL()}, `LEDGER_RELAY_REPLICAS "9" is not 1 to 5`},
		{map[string]string{"LEDGER_RELAY_MAX_AGE": "-1h", "CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret()}, []string{"serve"}, `LEDGER_RELAY_MAX_AGE "-1h" is not a duration`},
	} {
		e := map[string]string{"DATABASE_URL": dsn}
		for k, v := range tc.env {
			e[k] = v
		}
		err := run(ctx, tc.args, envOf(e), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v with %v: %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}
