package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/relay"
	"github.com/clerk-ledger/clerk-ledger/relay/natstest"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newLogger() (*slog.Logger, *syncBuffer) {
	var b syncBuffer
	return slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), &b
}

// newRelay returns a relay on srv, closed when t ends.
func newRelay(t *testing.T, srv *natstest.Server, log *slog.Logger, cfg relay.Config) *relay.Relay {
	t.Helper()
	cfg.URL = srv.URL()
	r, err := relay.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// runRelay runs the relay in a Runner until the test ends.
func runRelay(t *testing.T, db *sqlx.DB, log *slog.Logger, r *relay.Relay) *projections.Runner {
	t.Helper()
	run := projections.NewRunner(db, log, r)
	run.Idle = 10 * time.Millisecond
	run.MaxBackoff = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); run.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return run
}

// oddTypes are types the webhook stores that are not valid NATS subjects.
var oddTypes = []string{"user created", "user.*", "user.>", "a..b", ".user", "user.", "_invalid", "usér.created"}

// delivery i of a varied history as the webhook stores it: mostly
// realistic Clerk bodies, some events about no user, some with a type that
// is no valid subject.
func delivery(run string, i int) domain.Delivery {
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
	user := fmt.Sprintf("user_%s%06d", run, i%500)
	d := domain.Delivery{ID: fmt.Sprintf("msg_%s_%06d", run, i), Timestamp: at.Unix(), Signature: "v1,test", OccurredAt: at, UserID: user}
	switch {
	case i%97 == 13:
		d.Type = oddTypes[(i/97)%len(oddTypes)]
		d.Body = []byte(`{"data":{"id":"` + user + `"},"object":"event","type":` + strconv.Quote(d.Type) + `}`)
	case i%89 == 7:
		d.Type, d.UserID = "organization.created", ""
		d.Body, _ = clerkgen.Event(d.Type, clerkgen.User{ID: user}, at)
	default:
		d.Type = clerkgen.EventTypes[i%4] // user.created/updated/deleted, session.created
		d.Body, _ = clerkgen.Event(d.Type, clerkgen.User{ID: user, Email: user + "@example.com", FirstName: "Ada", LastName: "Lovelace"}, at)
	}
	return d
}

// rawDelivery i is delivery i, or (every 7th) one with control characters
// in its user id, delivery id or type: values the webhook refuses today but
// a ledger may hold from before, loaded with COPY (PostgreSQL itself refuses
// invalid UTF-8 and NUL in text).
func rawDelivery(run string, i int) domain.Delivery {
	d := delivery(run, i)
	switch i % 21 {
	case 3:
		d.UserID = "user_with\r\nnewline" + strconv.Itoa(i)
	case 10:
		d.Type = "user\ncreated"
	case 17:
		d.ID = "msg\x01" + run + strconv.Itoa(i)
		d.UserID = "user_\u0085" + strconv.Itoa(i)
	}
	return d
}

// appendConcurrently appends n deliveries through the event store from
// `senders` goroutines, as the webhook does (group commits, so ledger order
// is not position order).
func appendConcurrently(t *testing.T, db *sqlx.DB, run string, n, senders int) {
	t.Helper()
	store := schema.NewStore(db)
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for w := range senders {
		wg.Go(func() {
			for i := w; i < n; i += senders {
				if _, err := store.Append(context.Background(), delivery(run, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("append: %v", err)
	}
}

// ledger returns every event in ledger order.
func ledger(t *testing.T, db *sqlx.DB) []domain.Event {
	t.Helper()
	var out []domain.Event
	var c schema.Cursor
	for {
		evs, err := schema.ReadAfter(context.Background(), db, c, 5000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		c = schema.After(evs[len(evs)-1])
	}
}

// waitCount waits until the stream holds n messages.
func waitCount(t *testing.T, js jetstream.JetStream, stream string, n uint64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := natstest.Count(t, js, stream)
		if got == n {
			return
		}
		if got > n {
			t.Fatalf("stream %s holds %d messages, want %d", stream, got, n)
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s holds %d messages after %s, want %d", stream, got, d, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkFeed checks that msgs are exactly events, one message each, in
// ledger order: subject, payload byte for byte, and headers. omitted holds
// the positions published without their body.
func checkFeed(t *testing.T, prefix string, events []domain.Event, msgs []natstest.Msg, omitted map[int64]bool) {
	t.Helper()
	if len(msgs) != len(events) {
		t.Errorf("the stream holds %d messages, the ledger %d events", len(msgs), len(events))
	}
	bad := 0
	fail := func(format string, args ...any) {
		if bad++; bad <= 10 {
			t.Errorf(format, args...)
		}
	}
	for i := range min(len(msgs), len(events)) {
		m, e := msgs[i], events[i]
		if i > 0 && m.Seq <= msgs[i-1].Seq {
			fail("message %d has stream sequence %d after %d", i, m.Seq, msgs[i-1].Seq)
		}
		if got := m.Header.Get(relay.HeaderPosition); got != strconv.FormatInt(e.Position, 10) {
			fail("message %d (seq %d) is event %s, want %d (delivery %s): out of ledger order", i, m.Seq, got, e.Position, e.DeliveryID)
			continue
		}
		if want := relay.Subject(prefix, e.Type); m.Subject != want {
			fail("event %d (type %q) on subject %q, want %q", e.Position, e.Type, m.Subject, want)
		}
		if omitted[e.Position] {
			if len(m.Data) != 0 || m.Header.Get(relay.HeaderOmitted) != "too_large" {
				fail("event %d: payload %d bytes, %s %q; want none, too_large", e.Position, len(m.Data), relay.HeaderOmitted, m.Header.Get(relay.HeaderOmitted))
			}
		} else {
			if !bytes.Equal(m.Data, e.Body) {
				fail("event %d: payload differs from the stored body", e.Position)
			}
			if m.Header.Get(relay.HeaderOmitted) != "" {
				fail("event %d: unexpected %s", e.Position, relay.HeaderOmitted)
			}
		}
		want := map[string]string{
			relay.HeaderDeliveryID: e.DeliveryID,
			relay.HeaderType:       e.Type,
			relay.HeaderOccurredAt: e.OccurredAt.UTC().Format(time.RFC3339Nano),
			nats.MsgIdHdr:          msgID(e),
			relay.HeaderUserID:     e.UserID,
		}
		for k, v := range want {
			got, ok := m.Header[k]
			switch {
			case k == relay.HeaderUserID && v == "":
				if ok {
					fail("event %d: %s header %q, want none", e.Position, k, got)
				}
			case !ok || len(got) != 1:
				fail("event %d: header %s is %q", e.Position, k, got)
			case got[0] != clean(v):
				fail("event %d: header %s is %q, want %q", e.Position, k, got[0], clean(v))
			}
		}
	}
}

// msgID is the Nats-Msg-Id the relay gives e: its delivery id, or
// position:N when the delivery id would not survive a header.
func msgID(e domain.Event) string {
	if clean(e.DeliveryID) != e.DeliveryID || strings.TrimSpace(e.DeliveryID) != e.DeliveryID {
		return "position:" + strconv.FormatInt(e.Position, 10)
	}
	return e.DeliveryID
}

// clean is what a header keeps of s: control characters and invalid UTF-8
// as U+FFFD (the body keeps the exact value).
func clean(s string) string {
	var b []rune
	for _, r := range s { // ranging over invalid UTF-8 gives U+FFFD per byte
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) {
			r = '\uFFFD'
		}
		b = append(b, r)
	}
	return string(b)
}

// status returns the relay's status.
func status(t *testing.T, db *sqlx.DB) projections.Status {
	t.Helper()
	st, err := projections.ReadStatus(context.Background(), db, relay.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == relay.Name {
			return s
		}
	}
	t.Fatal("no relay status")
	return projections.Status{}
}

// copyEvents is schematest.CopyEvents, then waits until the events are
// readable below the xid8 gate: a transaction open elsewhere in the cluster
// (another package's tests) would otherwise hide them from the reads that
// follow, and a test would see an empty ledger.
func copyEvents(t *testing.T, db *sqlx.DB, n int, gen func(i int) domain.Delivery) {
	t.Helper()
	schematest.CopyEvents(t, db, n, gen)
	schematest.WaitVisible(t, db)
}
