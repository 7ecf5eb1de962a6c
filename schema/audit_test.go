package schema_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"
)

var t0 = time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC)

// deliveryAt is a delivery of typ about user that occurred at `at`.
func deliveryAt(t testing.TB, id, typ, user string, at time.Time) domain.Delivery {
	t.Helper()
	body, err := clerkgen.Event(typ, clerkgen.User{ID: user, Email: user + "@example.com"}, at)
	if err != nil {
		t.Fatal(err)
	}
	d, err := domain.NewDelivery(id, at.Unix(), "v1,sig", body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var historyTypes = []string{"user.created", "session.created", "user.updated", "email.created", "session.ended", "user.updated", "organization.created"}

// historyEvent is the i-th event of the known test history.
func historyEvent(t testing.TB, i int) domain.Delivery {
	typ := historyTypes[i%len(historyTypes)]
	user := fmt.Sprintf("user_%d", i%3)
	return deliveryAt(t, fmt.Sprintf("msg_%04d", i), typ, user, t0.Add(time.Duration(i)*time.Minute))
}

// pageAll pages through f with QueryAuditEvents until a short page, starting at c.
func pageAll(t *testing.T, db schema.Queryer, f schema.EventFilter, seen *[]schema.AuditEvent) {
	t.Helper()
	for {
		got, err := schema.QueryAuditEvents(context.Background(), db, f)
		if err != nil {
			t.Fatal(err)
		}
		*seen = append(*seen, got...)
		if len(got) > 0 {
			f.After = schema.After(got[len(got)-1].Event)
		}
		if len(got) < f.Limit {
			return
		}
	}
}

func TestAuditPagingWhileEventsArrive(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	const before, during = 40, 160
	for i := range before {
		if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Appenders run while the reader pages.
	var wg sync.WaitGroup
	done := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := before + w; i < before+during; i += 4 {
				if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	filters := []schema.EventFilter{
		{Types: []string{"user.*"}, Limit: 7},
		{UserID: "user_1", Types: []string{"session.*", "email.created"}, Limit: 5},
		{Limit: 9},
	}
	seen := make([][]schema.AuditEvent, len(filters))
	cursors := make([]schema.Cursor, len(filters))
	// Page while appends are going on, keeping each cursor.
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		for i, f := range filters {
			f.After = cursors[i]
			got, err := schema.QueryAuditEvents(ctx, db, f)
			if err != nil {
				t.Fatal(err)
			}
			seen[i] = append(seen[i], got...)
			if len(got) > 0 {
				cursors[i] = schema.After(got[len(got)-1].Event)
			}
		}
	}
	// Wait until every event is past the xid8 gate (other tests' open
	// transactions in the cluster hold it back), then read to the end.
	schematest.WaitReadable(t, db, before+during)
	for i, f := range filters {
		f.After = cursors[i]
		pageAll(t, db, f, &seen[i])
	}

	match := func(f schema.EventFilter, d domain.Delivery) bool {
		if f.UserID != "" && d.UserID != f.UserID {
			return false
		}
		if len(f.Types) == 0 {
			return true
		}
		for _, typ := range f.Types {
			if p, ok := strings.CutSuffix(typ, "*"); ok && strings.HasPrefix(d.Type, p) || typ == d.Type {
				return true
			}
		}
		return false
	}
	for i, f := range filters {
		var want []string
		for n := range before + during {
			if d := historyEvent(t, n); match(f, d) {
				want = append(want, d.ID)
			}
		}
		var got []string
		for j, e := range seen[i] {
			got = append(got, e.DeliveryID)
			if j > 0 {
				p := seen[i][j-1]
				if p.TxID > e.TxID || (p.TxID == e.TxID && p.Position >= e.Position) {
					t.Errorf("filter %d: events %d and %d out of ledger order", i, p.Position, e.Position)
				}
			}
		}
		sort.Strings(got)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("filter %+v: got %d events, want %d (missed or repeated)\n got %v\nwant %v", f, len(got), len(want), got, want)
		}
	}
}

func TestAuditQueryFiltersAndLeaves(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	for i := range 21 {
		if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	var s schematest.Sealer
	s.SealAll(t, db, 21)
	if _, err := store.Append(ctx, historyEvent(t, 21)); err != nil {
		t.Fatal(err)
	}
	schematest.WaitReadable(t, db, 22)
	// since is inclusive, until exclusive, on occurred_at.
	got, err := schema.QueryAuditEvents(ctx, db, schema.EventFilter{Since: t0.Add(5 * time.Minute), Until: t0.Add(8 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].DeliveryID != "msg_0005" || got[2].DeliveryID != "msg_0007" {
		t.Errorf("since/until: got %v", got)
	}
	all, err := schema.QueryAuditEvents(ctx, db, schema.EventFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 22 {
		t.Fatalf("got %d events", len(all))
	}
	for i, e := range all[:21] {
		want := tlog.RecordHash(domain.LeafOf(e.Event, nil).Encode(nil))
		if e.LeafIndex != int64(i) || string(e.LeafHash) != string(want[:]) {
			t.Errorf("event %d: leaf %d hash %x, want leaf %d hash %x", e.Position, e.LeafIndex, e.LeafHash, i, want)
		}
	}
	if all[21].LeafHash != nil {
		t.Errorf("unsealed event has a leaf hash %x", all[21].LeafHash)
	}
	// EachEvent: every event of the filter, in ledger order, one at a time.
	userEvents := func(until time.Time) []string {
		t.Helper()
		var ids []string
		n, err := schema.EachEvent(ctx, db, schema.EventFilter{UserID: "user_0", Until: until, Limit: 1}, func(e domain.Event) error {
			ids = append(ids, e.DeliveryID)
			return nil
		})
		if err != nil || n != int64(len(ids)) {
			t.Fatalf("EachEvent: %d, %v", n, err)
		}
		return ids
	}
	// user_0's events are msg_0000, msg_0003 and msg_0009 (msg_0006 is about an organization).
	at := t0.Add(9 * time.Minute) // msg_0009 occurred exactly then
	if ids := userEvents(at.Add(time.Microsecond)); fmt.Sprint(ids) != "[msg_0000 msg_0003 msg_0009]" {
		t.Errorf("EachEvent until just after %v: %v", at, ids)
	}
	if ids := userEvents(at); len(ids) != 2 {
		t.Errorf("EachEvent until %v: %v, want 2", at, ids)
	}
	// Streaming gives the same as paging, in one snapshot, and honours Limit.
	var streamed []string
	n, err := schema.StreamAuditEvents(ctx, db, schema.EventFilter{Types: []string{"user.*"}}, func(e schema.AuditEvent) error {
		streamed = append(streamed, e.DeliveryID)
		return nil
	})
	if err != nil || n != int64(len(streamed)) || len(streamed) != 10 {
		t.Errorf("stream: n %d err %v, %v", n, err, streamed)
	}
	n, _ = schema.StreamAuditEvents(ctx, db, schema.EventFilter{Limit: 5}, func(schema.AuditEvent) error { return nil })
	if n != 5 {
		t.Errorf("stream with limit 5 gave %d", n)
	}
}

// sealedLedger appends n events, each in its own transaction, and seals them
// into a legacy hash chain (event_chain), as ledgers from before the tree
// have it frozen.
func sealedLedger(t *testing.T, n int) (*schematestDB, []domain.Event) {
	t.Helper()
	db := schematest.NewDB(t)
	store := schema.NewStore(db)
	for i := range n {
		if _, err := store.Append(context.Background(), historyEvent(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	s := schematest.Sealer{Chain: true}
	s.SealAll(t, db, n)
	events, err := schema.ReadAfter(context.Background(), db, schema.Cursor{}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return &schematestDB{db, &s}, events
}

type schematestDB struct {
	sqlxDB *sqlx.DB
	sealer *schematest.Sealer
}

// verify runs VerifyChain, and the same check split into 1-, 2-, 3- and
// 5-link ranges checked in parallel, and requires every split to report
// exactly what the single pass does.
func verify(t *testing.T, db *schematestDB, d *domain.Digest) schema.ChainReport {
	t.Helper()
	rep, err := schema.VerifyChain(context.Background(), db.sqlxDB, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{1, 2, 3, 5} {
		split, err := schema.VerifyChainInRanges(context.Background(), db.sqlxDB, d, 64, size)
		if err != nil {
			t.Fatal(err)
		}
		split.Duration, rep.Duration = 0, 0
		if fmt.Sprintf("%+v", split) != fmt.Sprintf("%+v", rep) {
			t.Errorf("ranges of %d links report\n%+v\nthe single pass\n%+v", size, split, rep)
		}
	}
	return rep
}

func TestVerifyChainDetectsTampering(t *testing.T) {
	ctx := context.Background()
	t.Run("intact, and a kept digest is still reached later", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		rep := verify(t, db, nil)
		if !rep.OK || rep.Checked != 12 || rep.Head.Position != events[11].Position {
			t.Fatalf("intact ledger: %+v", rep)
		}
		kept := rep.Head
		store := schema.NewStore(db.sqlxDB)
		for i := 12; i < 15; i++ {
			if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
				t.Fatal(err)
			}
		}
		db.sealer.SealAll(t, db.sqlxDB, 15)
		if rep := verify(t, db, &kept); !rep.OK || rep.Checked != 15 {
			t.Errorf("with kept digest: %+v", rep)
		}
		wrong := kept
		wrong.Hash[0] ^= 1
		if rep := verify(t, db, &wrong); rep.OK || rep.FirstBad != kept.Position {
			t.Errorf("wrong digest accepted: %+v", rep)
		}
		beyond := domain.Digest{Position: 999, Hash: kept.Hash}
		if rep := verify(t, db, &beyond); rep.OK || rep.FirstBad != 999 {
			t.Errorf("unreached digest accepted: %+v", rep)
		}
	})
	t.Run("a pool of one connection checks in one range", func(t *testing.T) {
		db, _ := sealedLedger(t, 12)
		db.sqlxDB.SetMaxOpenConns(1) // the exporting transaction holds it
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		rep, err := schema.VerifyChain(ctx, db.sqlxDB, nil)
		if err != nil || !rep.OK || rep.Checked != 12 {
			t.Fatalf("one connection: %+v %v", rep, err)
		}
	})
	t.Run("edited body", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		p := events[4].Position
		schematest.Tamper(t, db.sqlxDB, `UPDATE events SET body = body || ' ' WHERE position = $1`, p)
		if rep := verify(t, db, nil); rep.OK || rep.FirstBad != p || !strings.Contains(rep.Problem, "does not match") {
			t.Errorf("edit at %d: %+v", p, rep)
		}
	})
	t.Run("edited time", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		p := events[7].Position
		schematest.Tamper(t, db.sqlxDB, `UPDATE events SET occurred_at = occurred_at - interval '1 microsecond' WHERE position = $1`, p)
		if rep := verify(t, db, nil); rep.OK || rep.FirstBad != p {
			t.Errorf("edit at %d: %+v", p, rep)
		}
	})
	t.Run("deleted row", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		p := events[6].Position
		schematest.Tamper(t, db.sqlxDB, `DELETE FROM events WHERE position = $1`, p)
		if rep := verify(t, db, nil); rep.OK || rep.FirstBad != p || !strings.Contains(rep.Problem, "missing") {
			t.Errorf("delete at %d: %+v", p, rep)
		}
	})
	t.Run("deleted link", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		schematest.Tamper(t, db.sqlxDB, `DELETE FROM event_chain WHERE seq = 6`)
		if rep := verify(t, db, nil); rep.OK || rep.FirstBad != events[6].Position || !strings.Contains(rep.Problem, "link 6 is missing") {
			t.Errorf("deleted link 6: %+v", rep)
		}
	})
	t.Run("row slipped into the sealed range", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		schematest.Tamper(t, db.sqlxDB, `INSERT INTO events (transaction_id, message_uuid, delivery_id, type, user_id, occurred_at, body, svix_timestamp, svix_signature)
SELECT transaction_id, gen_random_uuid(), 'msg_forged', type, user_id, occurred_at, body, svix_timestamp, svix_signature FROM events WHERE position = $1`, events[2].Position)
		rep := verify(t, db, nil)
		if rep.OK || rep.FirstBad <= events[11].Position || !strings.Contains(rep.Problem, "inserted") {
			t.Errorf("insert: %+v", rep)
		}
	})
	t.Run("edit with the chain rewritten is caught by the kept digest", func(t *testing.T) {
		db, events := sealedLedger(t, 12)
		kept := verify(t, db, nil).Head
		p := events[3].Position
		schematest.Tamper(t, db.sqlxDB, `UPDATE events SET body = replace(body, 'example.com', 'evil.test') WHERE position = $1`, p)
		// The attacker recomputes every link from the edited event on.
		edited, err := schema.ReadAfter(ctx, db.sqlxDB, schema.Cursor{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var prev []byte
		for i, e := range edited {
			h := domain.ChainHash(prev, e)
			prev = h[:]
			if i >= 3 {
				schematest.Tamper(t, db.sqlxDB, `UPDATE event_chain SET hash = $1 WHERE position = $2`, h[:], e.Position)
			}
		}
		if rep := verify(t, db, nil); !rep.OK {
			t.Fatalf("rewritten chain should be self-consistent: %+v", rep)
		}
		if rep := verify(t, db, &kept); rep.OK || rep.FirstBad != kept.Position {
			t.Errorf("kept digest did not catch the rewrite: %+v", rep)
		}
	})
	t.Run("chain tail cut is caught by the kept digest", func(t *testing.T) {
		db, _ := sealedLedger(t, 12)
		kept := verify(t, db, nil).Head
		schematest.Tamper(t, db.sqlxDB, `DELETE FROM event_chain WHERE seq > 10`)
		if rep := verify(t, db, nil); !rep.OK {
			t.Errorf("a shorter chain alone is consistent: %+v", rep)
		}
		if rep := verify(t, db, &kept); rep.OK || rep.FirstBad != kept.Position {
			t.Errorf("cut tail: %+v", rep)
		}
	})
}

func TestAccessLogIsAppendOnly(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	for i := range 3 {
		a := schema.Access{Actor: "user_aud", Channel: schema.ChannelAPI, Action: schema.ActionEvents, Filters: map[string]string{"user_id": fmt.Sprint(i)}, RowCount: int64(i)}
		if err := schema.RecordAccess(ctx, db, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := schema.LastVerification(ctx, db); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("never verified: %v", err)
	}
	list, err := schema.ListAccess(ctx, db, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Filters["user_id"] != "2" || list[0].RowCount != 2 || list[0].At.IsZero() {
		t.Errorf("newest first: %+v", list)
	}
	if older, _ := schema.ListAccess(ctx, db, list[1].ID, 10); len(older) != 1 || older[0].Filters["user_id"] != "0" {
		t.Errorf("older page: %+v", older)
	}
	if err := schema.RecordVerification(ctx, db, schema.Verification{Actor: "cli:op", Channel: schema.ChannelCLI, OK: true, Checked: 3}); err != nil {
		t.Fatal(err)
	}
	if v, err := schema.LastVerification(ctx, db); err != nil || !v.OK || v.Checked != 3 || v.Actor != "cli:op" {
		t.Errorf("last verification: %+v %v", v, err)
	}
	for _, q := range []string{`UPDATE audit_access SET row_count = 0`, `DELETE FROM audit_access`, `TRUNCATE audit_access`, `DELETE FROM audit_verifications`} {
		if _, err := db.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: %v", q, err)
		}
	}
}

// TestQueryAuditEventsRecorded checks that the one-statement query returns
// exactly what QueryAuditEvents does for each filter and page, records each
// call once with its row count, and answers nothing when the record fails.
func TestQueryAuditEventsRecorded(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	for i := range 30 {
		if _, err := store.Append(ctx, historyEvent(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	var s schematest.Sealer
	s.SealAll(t, db, 25) // the last 5 stay unsealed: no leaf
	schematest.WaitReadable(t, db, 30)
	filters := []schema.EventFilter{
		{},
		{UserID: "user_1", Limit: 4},
		{Types: []string{"user.*", "session.ended"}, Limit: 7},
		{Since: t0.Add(5 * time.Minute), Until: t0.Add(20 * time.Minute), Limit: 6},
		{UserID: "user_nobody"},
	}
	calls := 0
	for fi, f := range filters {
		for page := 0; ; page++ {
			want, err := schema.QueryAuditEvents(ctx, db, f)
			if err != nil {
				t.Fatal(err)
			}
			a := schema.Access{Actor: "user_aud", Channel: schema.ChannelAPI, Action: schema.ActionEvents, Filters: map[string]string{"filter": fmt.Sprint(fi), "page": fmt.Sprint(page)}}
			var got []schema.AuditEvent
			n, err := schema.QueryAuditEventsRecorded(ctx, db, f, a, func(e schema.AuditEvent) error {
				e.Body = bytes.Clone(e.Body)
				got = append(got, e)
				return nil
			})
			if err != nil || n != len(got) {
				t.Fatal(n, err)
			}
			calls++
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("filter %d page %d:\n got %v\nwant %v", fi, page, got, want)
			}
			last, err := schema.ListAccess(ctx, db, 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(last) != 1 || last[0].RowCount != int64(len(got)) || last[0].Filters["filter"] != fmt.Sprint(fi) || last[0].Filters["page"] != fmt.Sprint(page) || last[0].Actor != "user_aud" {
				t.Fatalf("filter %d page %d: recorded %+v, want %d rows", fi, page, last, len(got))
			}
			limit := f.Limit
			if limit == 0 {
				limit = 100
			}
			if len(got) < limit {
				break
			}
			f.After = schema.After(got[len(got)-1].Event)
		}
	}
	all, err := schema.ListAccess(ctx, db, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != calls {
		t.Errorf("%d calls recorded %d times", calls, len(all))
	}

	// A record that cannot be written: no events are returned, nothing is
	// recorded.
	for _, q := range []string{
		`CREATE FUNCTION refuse_access() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'access log refused'; END $$`,
		`CREATE TRIGGER refuse BEFORE INSERT ON audit_access FOR EACH ROW EXECUTE FUNCTION refuse_access()`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	_, err = schema.QueryAuditEventsRecorded(ctx, db, schema.EventFilter{}, schema.Access{Actor: "user_aud", Channel: schema.ChannelAPI, Action: schema.ActionEvents}, func(schema.AuditEvent) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "access log refused") {
		t.Errorf("record refused: err %v", err)
	}
	if after, _ := schema.ListAccess(ctx, db, 0, 1000); len(after) != calls {
		t.Errorf("refused query recorded: %d entries, want %d", len(after), calls)
	}
}

// TestQueryAuditEventsRecordedHoldsNoXID: while the caller is still reading a
// large page, the query holds no transaction id, so it never holds back the
// xid8 gate that every reader of the ledger (projectors included) waits on.
func TestQueryAuditEventsRecordedHoldsNoXID(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	store := schema.NewStore(db)
	pad := strings.Repeat("x", 60000) // 18 MB in all: more than socket buffers hold
	for i := range 300 {
		body, err := clerkgen.Event("user.updated", clerkgen.User{ID: "user_big", Email: "big@example.com"}, t0.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		body = append(body[:len(body)-1], `,"padding":"`+pad+`"}`...)
		d, err := domain.NewDelivery(fmt.Sprintf("msg_big_%03d", i), t0.Unix(), "v1,sig", body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Append(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	schematest.WaitReadable(t, db, 300)
	conn, err := db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var pid int
	if err := conn.GetContext(ctx, &pid, `SELECT pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	checked := false
	n, err := schema.QueryAuditEventsRecorded(ctx, conn, schema.EventFilter{UserID: "user_big", Limit: 300}, schema.Access{Actor: "user_aud", Channel: schema.ChannelAPI, Action: schema.ActionEvents}, func(e schema.AuditEvent) error {
		if checked {
			return nil
		}
		checked = true
		// The page's backend is still sending when the first row arrives.
		var st struct {
			State string         `db:"state"`
			XID   sql.NullString `db:"backend_xid"`
		}
		if err := db.GetContext(ctx, &st, `SELECT state, backend_xid::text AS backend_xid FROM pg_stat_activity WHERE pid = $1`, pid); err != nil {
			return err
		}
		if st.State != "active" {
			t.Errorf("the page's backend is %q, not still sending: the check proves nothing", st.State)
		}
		if st.XID.Valid {
			t.Errorf("the page's backend holds transaction id %s while the page is read", st.XID.String)
		}
		return nil
	})
	if err != nil || n != 300 || !checked {
		t.Fatalf("%d events, %v", n, err)
	}
}

// TestAuditPagesEndAtMaxBytes: a page stops before the event whose bodies
// before it reach MaxBytes (always holding its first), paging on from there
// gives every event once, and the places, counts and UpTo bounds agree.
func TestAuditPagesEndAtMaxBytes(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	var sizes []int64
	schematest.CopyEvents(t, db, 10, func(i int) domain.Delivery {
		d := deliveryAt(t, fmt.Sprintf("msg_%02d", i), "user.updated", "user_a", t0.Add(time.Duration(i)*time.Minute))
		d.Body = append(d.Body[:len(d.Body)-1], `,"pad":"`+strings.Repeat("p", 1000*(i+1))+`"}`...)
		sizes = append(sizes, int64(len(d.Body)))
		return d
	})
	schematest.WaitReadable(t, db, 10)
	sum := func(n int) (s int64) {
		for _, v := range sizes[:n] {
			s += v
		}
		return s
	}
	page := func(f schema.EventFilter) ([]string, schema.Page) {
		t.Helper()
		var ids []string
		p, err := schema.EachAuditEvent(ctx, db, f, func(e schema.AuditEvent) error {
			ids = append(ids, e.DeliveryID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids, p
	}
	for _, c := range []struct {
		max  int64
		want int
		more bool
	}{
		{sum(3), 3, true},     // the 4th starts at exactly MaxBytes: cut
		{sum(3) + 1, 4, true}, // the 4th starts below it: kept, though it ends past it
		{1, 1, true},          // the first event always
		{sum(10), 10, true},   // everything, and ending exactly there may mean more
		{sum(10) + 1, 10, false},
	} {
		ids, p := page(schema.EventFilter{UserID: "user_a", MaxBytes: c.max})
		if len(ids) != c.want || p.Count != c.want || p.Bytes != sum(c.want) || p.More != c.more {
			t.Errorf("MaxBytes %d: %d events %v, %d bytes, more %v; want %d events, %d bytes, more %v", c.max, len(ids), ids, p.Bytes, p.More, c.want, sum(c.want), c.more)
		}
		if got, _ := schema.QueryAuditEvents(ctx, db, schema.EventFilter{UserID: "user_a", MaxBytes: c.max}); len(got) != c.want {
			t.Errorf("QueryAuditEvents MaxBytes %d: %d events, want %d", c.max, len(got), c.want)
		}
	}
	// Paging at a budget of about two bodies gives each event once, in order.
	var all []string
	f := schema.EventFilter{UserID: "user_a", MaxBytes: 2500, Limit: 4}
	var places []schema.Cursor
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := schema.EachAuditEvent(ctx, db, f, func(e schema.AuditEvent) error {
			all = append(all, e.DeliveryID)
			places = append(places, schema.After(e.Event))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !p.More {
			break
		}
		f.After = p.Last
	}
	if fmt.Sprint(all) != "[msg_00 msg_01 msg_02 msg_03 msg_04 msg_05 msg_06 msg_07 msg_08 msg_09]" {
		t.Fatalf("paged by bytes: %v", all)
	}
	// UpTo is inclusive; counts honour After and UpTo.
	if ids, _ := page(schema.EventFilter{UserID: "user_a", UpTo: places[4]}); len(ids) != 5 || ids[4] != "msg_04" {
		t.Errorf("UpTo the 5th: %v", ids)
	}
	for _, c := range []struct {
		f    schema.EventFilter
		want int64
	}{
		{schema.EventFilter{UserID: "user_a"}, 10},
		{schema.EventFilter{UserID: "user_a", UpTo: places[4]}, 5},
		{schema.EventFilter{UserID: "user_a", After: places[4]}, 5},
		{schema.EventFilter{UserID: "user_a", After: places[2], UpTo: places[4]}, 2},
		{schema.EventFilter{UserID: "user_b"}, 0},
	} {
		if n, err := schema.CountAuditEvents(ctx, db, c.f); err != nil || n != c.want {
			t.Errorf("count %+v: %d %v, want %d", c.f, n, err, c.want)
		}
	}
	// Places newest first, before a place.
	got, err := schema.PlacesBefore(ctx, db, schema.EventFilter{UserID: "user_a"}, schema.Cursor{}, 3)
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]schema.Cursor{places[9], places[8], places[7]}) {
		t.Errorf("the 3 newest places: %v %v", got, err)
	}
	got, err = schema.PlacesBefore(ctx, db, schema.EventFilter{UserID: "user_a"}, places[7], 3)
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]schema.Cursor{places[6], places[5], places[4]}) {
		t.Errorf("the 3 places before the 8th: %v %v", got, err)
	}
	if got, _ = schema.PlacesBefore(ctx, db, schema.EventFilter{UserID: "user_a"}, places[0], 3); len(got) != 0 {
		t.Errorf("places before the first: %v", got)
	}
}
