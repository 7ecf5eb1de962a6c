package projections

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// userFields are the data fields of a user event as raw JSON texts.
type userFields struct {
	First, Last, Username, Email, Image, Meta, CreatedAt string
	// The rest of a complete user.
	Phone, ExternalID, Private string
}

// userEventBody is a Clerk user event about id whose data fields are f
// (defaults for the empty ones), byte for byte as given.
func userEventBody(typ, id string, updatedAt int64, f userFields) []byte {
	or := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	return fmt.Appendf(nil, `{"type":%q,"object":"event","timestamp":%d,"instance_id":"ins_test","data":{"id":%q,"object":"user",`+
		`"first_name":%s,"last_name":%s,"username":%s,"image_url":%s,"primary_email_address_id":"idn_1",`+
		`"email_addresses":[{"id":"idn_1","email_address":%s}],"public_metadata":%s,"created_at":%s,"updated_at":%d,`+
		`"primary_phone_number_id":"idn_p","phone_numbers":[{"id":"idn_p","phone_number":%s}],"external_id":%s,"private_metadata":%s}}`,
		typ, updatedAt, id, or(f.First, `"Ada"`), or(f.Last, `"Lovelace"`), or(f.Username, `"ada"`),
		or(f.Image, `"https://img.example/ada"`), or(f.Email, `"ada@example.com"`), or(f.Meta, `{"plan":"pro"}`),
		or(f.CreatedAt, "1000"), updatedAt, or(f.Phone, `"+1 555 0100"`), or(f.ExternalID, "null"), or(f.Private, `{}`))
}

// appendUserEvent stores a user event through the webhook's event store
// (domain.NewDelivery, group commit) and returns its delivery id.
func appendUserEvent(t testing.TB, store *schema.Store, typ, id string, updatedAt int64, f userFields) string {
	t.Helper()
	body := userEventBody(typ, id, updatedAt, f)
	sum := sha256.Sum256(body)
	d, err := domain.NewDelivery("msg_"+hex.EncodeToString(sum[:8]), time.Now().Unix(), "v1,test", body)
	if err != nil {
		t.Fatalf("delivery %s: %v", body, err)
	}
	if stored, err := store.Append(context.Background(), d); err != nil || !stored {
		t.Fatalf("append %s: stored %v, %v", d.ID, stored, err)
	}
	return d.ID
}

// userRow returns column -> text of user id's row, or nil when it has none.
func userRow(t testing.TB, db *sqlx.DB, id string) map[string]string {
	t.Helper()
	rows, err := db.Queryx(`SELECT id, email, first_name, last_name, name, username, image_url, public_metadata::text AS public_metadata,
    created_at::text AS created_at, updated_at::text AS updated_at, phone_number, external_id,
    private_metadata::text AS private_metadata FROM users WHERE id = $1`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		return nil
	}
	m := map[string]any{}
	if err := rows.MapScan(m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range m {
		out[k] = fmt.Sprint(v)
		if b, ok := v.([]byte); ok {
			out[k] = string(b)
		}
	}
	return out
}

// bigEmail is an incompressible email address of 9.6 kB (as a JSON string):
// an index entry of it exceeds a btree page's third (2,704 bytes), so an
// index on its column refuses the row with 54000.
func bigEmail() string {
	var b strings.Builder
	for i := range 150 {
		s := sha256.Sum256([]byte{byte(i), byte(i >> 8)})
		b.WriteString(hex.EncodeToString(s[:]))
	}
	return `"` + b.String() + `@example.com"`
}

// poisonCase is one delivery holding a value PostgreSQL refuses in the
// users row (or, for the escaped backslash, one it must not mistake for such).
type poisonCase struct {
	name string
	f    userFields
	// update: the poison is a user.updated of a user already projected
	// (else a user.created of a new user).
	update bool
	// want: columns of the poison user's row (kept in storable form).
	want map[string]string
	// refused: the SQLSTATE the safety net records (the event is poison).
	refused string
}

// poisonCases are the cases of issue 11 item 1 and a few more.
func poisonCases() []poisonCase {
	return []poisonCase{
		{name: "NUL in first_name", f: userFields{First: `"Ad\u0000a"`}, want: map[string]string{"first_name": "Ad\uFFFDa", "name": "Ad\uFFFDa Lovelace"}},
		{name: "NUL in first_name, update", update: true, f: userFields{First: `"Ad\u0000a"`}, want: map[string]string{"first_name": "Ad\uFFFDa"}},
		{name: "NUL in last_name", f: userFields{Last: `"\u0000"`}, want: map[string]string{"last_name": "\uFFFD"}},
		{name: "NUL in username", f: userFields{Username: `"ada\u0000"`}, want: map[string]string{"username": "ada\uFFFD"}},
		{name: "NUL in email", f: userFields{Email: `"ada\u0000@example.com"`}, want: map[string]string{"email": "ada\uFFFD@example.com"}},
		{name: "NUL in image_url", f: userFields{Image: `"https://img.example/\u0000"`}, want: map[string]string{"image_url": "https://img.example/\uFFFD"}},
		{name: "lone surrogate in first_name", f: userFields{First: `"\ud800Ada"`}, want: map[string]string{"first_name": "\uFFFDAda"}},
		{name: "NUL in public_metadata value", f: userFields{Meta: `{"k":"a\u0000b"}`}, want: map[string]string{"public_metadata": `{"k": "a` + "\uFFFD" + `b"}`}},
		{name: "lone high surrogate in public_metadata", f: userFields{Meta: `{"k":"\ud800"}`}, want: map[string]string{"public_metadata": `{"k": "` + "\uFFFD" + `"}`}},
		{name: "lone low surrogate in public_metadata", f: userFields{Meta: `{"k":"\udc00x"}`}, want: map[string]string{"public_metadata": `{"k": "` + "\uFFFD" + `x"}`}},
		{name: "NUL in a public_metadata key", f: userFields{Meta: `{"a\u0000":1,"b":[{"\u0000":"\ud800\udc00"}]}`}, want: map[string]string{"public_metadata": `{"b": [{"` + "\uFFFD" + `": "𐀀"}], "a` + "\uFFFD" + `": 1}`}},
		{name: "escaped backslash before u0000 is text", f: userFields{Meta: `{"k":"\\u0000"}`}, want: map[string]string{"public_metadata": `{"k": "\\u0000"}`}},
		{name: "NUL in the phone number", f: userFields{Phone: `"+1\u0000"`}, want: map[string]string{"phone_number": "+1\uFFFD"}},
		{name: "lone surrogate in external_id", f: userFields{ExternalID: `"x\udc00"`}, want: map[string]string{"external_id": "x\uFFFD"}},
		{name: "NUL in private_metadata", f: userFields{Private: `{"k\u0000":"\ud800"}`}, want: map[string]string{"private_metadata": `{"k` + "\uFFFD" + `": "` + "\uFFFD" + `"}`}},
		// The safety net: values the fold keeps that PostgreSQL refuses.
		{name: "number beyond numeric in private_metadata", f: userFields{Private: `{"n":1e1000000}`}, refused: "22003"},
		{name: "external_id too large for its index", update: true, f: userFields{ExternalID: bigEmail()}, refused: "54000"},
		// users keeps no index on email (migration 00021), so an address no
		// index could take is kept; user_emails skips addresses that long.
		{name: "email too large for an index", f: userFields{Email: bigEmail()}, want: map[string]string{"email": strings.Trim(bigEmail(), `"`)}},
		{name: "email too large for an index, update", update: true, f: userFields{Email: bigEmail()}, want: map[string]string{"email": strings.Trim(bigEmail(), `"`)}},
		{name: "number beyond numeric in public_metadata", f: userFields{Meta: `{"n":1e1000000}`}, refused: "22003"},
		// A created_at beyond timestamptz (and JSON: past the year 9999) is
		// no longer refused: it folds as no time (domain.msTime,
		// TestMsTimeKeepsOnlyTheYears0To9999). Year 0 still is.
		// Year 0 (1 BC) as RFC 3339, the form both paths write: refused.
		{name: "created_at in year 0", update: true, f: userFields{CreatedAt: "-62135596800001"}, refused: "22008"},
	}
}

// TestPoisonDeliveryDoesNotStopTheProjection is issue 11, item 1: each
// delivery that PostgreSQL would refuse in the users row is stored, then an
// ordinary "canary" user must be projected within a second by a running
// Runner; the poison value is either kept in storable form (the fold's rule,
// domain.StorableText/StorableJSON) or, for what that rule does not cover,
// the event is isolated as poison (recorded, counted) by the safety net. A
// rebuild then succeeds with the same table and check is clean.
func TestPoisonDeliveryDoesNotStopTheProjection(t *testing.T) {
	t.Parallel()
	for _, c := range poisonCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			db := schematest.NewDB(t)
			store := schema.NewStore(db)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := NewRunner(db, nil, NewUsers(), NewTree())
			r.Idle = 10 * time.Millisecond
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			wg.Go(func() { r.Run(ctx) })

			var before map[string]string
			if c.update {
				appendUserEvent(t, store, "user.created", "user_poison", 1000, userFields{})
				waitFor(t, "the user before the poison", func() bool { return userRow(t, db, "user_poison") != nil })
				before = userRow(t, db, "user_poison")
			}
			typ := "user.created"
			if c.update {
				typ = "user.updated"
			}
			poison := appendUserEvent(t, store, typ, "user_poison", 2000, c.f)
			appendUserEvent(t, store, "user.created", "user_canary", 1000, userFields{First: `"Canary"`})
			waitVisible(t, db) // the gate is not the projector's: wait for it, then give it a second
			deadline := time.Now().Add(time.Second)
			for userRow(t, db, "user_canary") == nil {
				if time.Now().After(deadline) {
					st, _ := ReadStatus(context.Background(), db)
					t.Fatalf("the canary was not projected within a second of being readable; status %+v", st)
				}
				time.Sleep(5 * time.Millisecond)
			}
			waitFor(t, "the tree sealer", func() bool { return statusOf(t, db, TreeName).LagEvents == 0 })
			cancel()
			wg.Wait()

			var fails []failureRow
			if err := db.Select(&fails, `SELECT position, delivery_id, error, failed_at FROM projection_failures WHERE projector = 'users'`); err != nil {
				t.Fatal(err)
			}
			_, applied, failed := checkpointOf(t, db, UsersName)
			row := userRow(t, db, "user_poison")
			if c.refused == "" {
				if len(fails) != 0 || failed != 0 || row == nil {
					t.Fatalf("kept value: failures %+v, failed %d, row %v", fails, failed, row)
				}
				for col, want := range c.want {
					if row[col] != want {
						t.Errorf("%s = %q, want %q", col, row[col], want)
					}
				}
			} else {
				if len(fails) != 1 || fails[0].DeliveryID != poison || !strings.Contains(fails[0].Error, "("+c.refused+")") || failed != 1 {
					t.Fatalf("refused row: failures %+v, failed %d (want the poison %s, SQLSTATE %s)", fails, failed, poison, c.refused)
				}
				if fmt.Sprint(row) != fmt.Sprint(before) {
					t.Fatalf("the poison changed the user: %v, before %v", row, before)
				}
				if st := statusOf(t, db, UsersName); st.LastFailure == nil || st.LastFailure.DeliveryID != poison || st.Failed != 1 {
					t.Fatalf("status: %+v", st)
				}
				if got := scrape(t, NewCollector(db, nil))[`ledger_projector_failed_total{projector="users"}`]; got != 1 {
					t.Fatalf("ledger_projector_failed_total = %v", got)
				}
			}
			if want := countUserEvents(t, db) - failed; applied != want {
				t.Fatalf("applied %d, want %d", applied, want)
			}
			if st := statusOf(t, db, UsersName); st.LastError != "" {
				t.Fatalf("a batch failed and was retried: %s", st.LastError)
			}
			if n := verifyTree(t, db); int64(n) != countUserEvents(t, db) {
				t.Fatalf("tree has %d leaves", n)
			}

			// Rebuild and check treat it as the live projector did.
			rebuildAgrees(t, db, NewUsers(), visibleUsers, failed)
			if chk, err := Check(context.Background(), db, NewUsers(), nil); err != nil || len(chk.Differences) != 0 {
				t.Fatalf("check after the rebuild: %v %+v", err, chk.Differences)
			}
		})
	}
}

// statusOf returns projector name's status.
func statusOf(t testing.TB, db *sqlx.DB, name string) Status {
	t.Helper()
	st, err := ReadStatus(context.Background(), db, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status of %s: %+v", name, st)
	return Status{}
}

// failureRow is a projection_failures row.
type failureRow struct {
	Position   int64     `db:"position"`
	DeliveryID string    `db:"delivery_id"`
	Error      string    `db:"error"`
	FailedAt   time.Time `db:"failed_at"`
}

// TestPoisonRebuildAndCheckAgreeWithLive puts every poison case, some
// superseded later by a good update, at random places in a synthetic
// history; the live projector in batches of 3 and in batches of 2000 gives
// the same table, and on both a rebuild gives it again and check is clean
// (so the COPY path isolates the same rows, found among many good ones).
func TestPoisonRebuildAndCheckAgreeWithLive(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(41, 41))
	ds := history(t, 41, 40, 500)
	mk := func(typ, id string, updatedAt int64, f userFields) domain.Delivery {
		body := userEventBody(typ, id, updatedAt, f)
		d, err := domain.NewDelivery(fmt.Sprintf("msg_%s_%d", id, updatedAt), time.Now().Unix(), "v1,test", body)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	refused, superseded := 0, 0
	for i, c := range poisonCases() {
		id := fmt.Sprintf("user_case%02d", i)
		var seq []domain.Delivery
		typ := "user.created"
		if c.update {
			seq, typ = append(seq, mk("user.created", id, 1000, userFields{})), "user.updated"
		}
		seq = append(seq, mk(typ, id, 2000, c.f))
		if c.refused != "" {
			refused++
			if i%2 == 0 {
				superseded++
				seq = append(seq, mk("user.updated", id, 3000, userFields{First: `"Later"`}))
			}
		}
		at := 0
		for _, d := range seq { // in this order, at random places
			at += r.IntN(len(ds) - at + 1)
			ds = slices.Insert(ds, at, d)
			at++
		}
	}
	small, big := schematest.NewDB(t), schematest.NewDB(t)
	for rest := ds; len(rest) > 0; {
		n := min(len(rest), 1+r.IntN(50))
		load(t, small, rest[:n])
		load(t, big, rest[:n])
		rest = rest[n:]
	}
	rs, rb := NewRunner(small, nil, NewUsers()), NewRunner(big, nil, NewUsers())
	rs.BatchSize = 3
	runToHead(t, rs)
	runToHead(t, rb)
	live := visibleUsers(t, small)
	if other := visibleUsers(t, big); other != live {
		t.Fatalf("batches of 3 and of 2000 give other tables:\n%s\n\n%s", live, other)
	}
	if !strings.Contains(live, "Later") || !strings.Contains(live, "\uFFFD") {
		t.Fatal("the table shows neither the superseding updates nor a kept value")
	}
	for _, db := range []*sqlx.DB{small, big} {
		if _, _, failed := checkpointOf(t, db, UsersName); failed < int64(refused-superseded) || failed > int64(refused) {
			// A refused event superseded within its batch is not poison.
			t.Fatalf("%d poison events for %d refused cases", failed, refused)
		}
		if chk, err := Check(context.Background(), db, NewUsers(), nil); err != nil || len(chk.Differences) != 0 {
			t.Fatalf("check: %v %+v", err, chk.Differences)
		}
		if _, err := Rebuild(context.Background(), db, NewUsers(), nil); err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		if rebuilt := visibleUsers(t, db); rebuilt != live {
			t.Fatalf("rebuild gives another table:\nlive:\n%s\n\nrebuilt:\n%s", live, rebuilt)
		}
		if chk, err := Check(context.Background(), db, NewUsers(), nil); err != nil || len(chk.Differences) != 0 {
			t.Fatalf("check after the rebuild: %v %+v", err, chk.Differences)
		}
	}
}

// picky is a projector writing one row per event into picky_rows, whose
// CHECK constraint refuses the value 13: PostgreSQL rejects the row of some
// events, and nothing in the projector knows which.
type picky struct{ values map[int64]int }

func (picky) Name() string    { return "picky" }
func (picky) Types() []string { return nil }
func (p picky) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	pos := make([]int64, len(events))
	vals := make([]int64, len(events))
	for i, e := range events {
		pos[i], vals[i] = e.Position, int64(p.values[e.Position])
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO picky_rows (position, v) SELECT * FROM unnest($1::bigint[], $2::int[])`, pq.Array(pos), pq.Array(vals))
	if err != nil {
		return nil, fmt.Errorf("insert %d rows: %w", len(events), err)
	}
	return nil, nil
}

// TestRefusedRowsAreIsolatedInTheBatch forces the safety net with an
// arbitrary data error: in one batch of 40 events, the rows of three are
// refused by a CHECK constraint; those three are recorded as poison and
// every other event of the same batch is applied and committed with the
// checkpoint, in that one Step.
func TestRefusedRowsAreIsolatedInTheBatch(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	if _, err := db.Exec(`CREATE TABLE picky_rows (position bigint PRIMARY KEY, v int NOT NULL CHECK (v <> 13))`); err != nil {
		t.Fatal(err)
	}
	ds := history(t, 21, 5, 40)
	load(t, db, ds)
	waitVisible(t, db)
	evs, err := schema.ReadAfter(context.Background(), db, schema.Cursor{}, 100)
	if err != nil || len(evs) != 40 {
		t.Fatalf("%d events, %v", len(evs), err)
	}
	p := picky{values: map[int64]int{}}
	bad := map[int64]bool{evs[0].Position: true, evs[17].Position: true, evs[18].Position: true}
	for _, e := range evs {
		p.values[e.Position] = 1
		if bad[e.Position] {
			p.values[e.Position] = 13
		}
	}
	r := NewRunner(db, nil, p)
	if err := EnsureCheckpoint(context.Background(), db, p.Name()); err != nil {
		t.Fatal(err)
	}
	res, err := r.Step(context.Background(), p)
	if err != nil || res.Read != 40 || res.Failed != 3 || !res.Advance {
		t.Fatalf("step: %+v, %v", res, err)
	}
	var applied []int64
	if err := db.Select(&applied, `SELECT position FROM picky_rows ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	if len(applied) != 37 {
		t.Fatalf("%d events applied, want the 37 good ones", len(applied))
	}
	for _, pos := range applied {
		if bad[pos] {
			t.Fatalf("refused event %d applied", pos)
		}
	}
	var fails []failureRow
	if err := db.Select(&fails, `SELECT position, delivery_id, error, failed_at FROM projection_failures WHERE projector = 'picky' ORDER BY position`); err != nil {
		t.Fatal(err)
	}
	if len(fails) != 3 {
		t.Fatalf("failures: %+v", fails)
	}
	for _, f := range fails {
		if !bad[f.Position] || !strings.Contains(f.Error, "(23514)") || !strings.Contains(f.Error, "refuses") {
			t.Fatalf("failure %+v", f)
		}
	}
	cp, nApplied, nFailed := checkpointOf(t, db, p.Name())
	if cp != schema.After(evs[39]) || nApplied != 37 || nFailed != 3 {
		t.Fatalf("checkpoint %s applied %d failed %d", cp, nApplied, nFailed)
	}
}

// erring fails every Apply with the SQLSTATE code, raised by PostgreSQL.
type erring struct {
	Projector
	code  string
	calls int
}

func (p *erring) Apply(ctx context.Context, tx *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	p.calls++
	_, err := tx.ExecContext(ctx, `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '`+p.code+`'; END $$`)
	return nil, err
}

// erringGapless is an erring projector that is gapless, like the one it wraps.
type erringGapless struct{ *erring }

func (erringGapless) gapless() {}

// TestOnlyRefusedRowsArePoison: an error that is not the rows' fault (a
// serialization failure, an undefined table) rolls the batch back to be
// retried, and so does any error of the tree sealer, refused rows
// included: the tree must cover every event.
func TestOnlyRefusedRowsArePoison(t *testing.T) {
	t.Parallel()
	if _, ok := Projector(NewTree()).(gapless); !ok {
		t.Fatal("the tree sealer is not gapless")
	}
	if _, ok := Projector(NewUsers()).(gapless); ok {
		t.Fatal("the users projector is gapless")
	}
	db := schematest.NewDB(t)
	load(t, db, history(t, 23, 3, 10))
	waitVisible(t, db)
	for _, c := range []struct {
		p    Projector
		code string
	}{
		{logProjector{"log"}, "40001"},
		{logProjector{"log"}, "42P01"},
		{logProjector{"log"}, "57014"},
		{NewTree(), "22021"},
		{NewTree(), "23505"},
	} {
		var p Projector = &erring{Projector: c.p, code: c.code}
		if _, ok := c.p.(gapless); ok {
			p = erringGapless{p.(*erring)}
		}
		if err := EnsureCheckpoint(context.Background(), db, p.Name()); err != nil {
			t.Fatal(err)
		}
		_, err := NewRunner(db, nil, p).Step(context.Background(), p)
		var pqErr *pq.Error
		calls := 0
		switch p := p.(type) {
		case *erring:
			calls = p.calls
		case erringGapless:
			calls = p.calls
		}
		if err == nil || !errors.As(err, &pqErr) || string(pqErr.Code) != c.code || calls != 1 {
			t.Fatalf("%s with %s: %v (%d calls)", p.Name(), c.code, err, calls)
		}
		cp, applied, failed := checkpointOf(t, db, p.Name())
		var n int
		db.Get(&n, `SELECT count(*) FROM projection_failures`)
		if cp != (schema.Cursor{}) || applied != 0 || failed != 0 || n != 0 {
			t.Fatalf("%s with %s: checkpoint %s applied %d failed %d, %d failures", p.Name(), c.code, cp, applied, failed, n)
		}
	}
}

// TestFailureRecordCannotFail: a poison event's error message may quote the
// event (here a NUL and invalid UTF-8); recording it must not be refused
// itself, or the poison would stop the projector after all.
func TestFailureRecordCannotFail(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	load(t, db, history(t, 25, 2, 4))
	waitVisible(t, db)
	p := quoting{}
	r := NewRunner(db, nil, p)
	if err := r.CatchUp(context.Background()); err != nil {
		t.Fatalf("catch up: %v", err)
	}
	var msgs []string
	if err := db.Select(&msgs, `SELECT error FROM projection_failures WHERE projector = 'quoting'`); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 || msgs[0] != "data names user_\uFFFD\uFFFD" {
		t.Fatalf("recorded %q", msgs)
	}
	// The users projector's own message quoting an id it read from the data.
	db2 := schematest.NewDB(t)
	body := `{"type":"user.updated","object":"event","timestamp":1,"data":{"id":"user_\u0000x"}}`
	load(t, db2, []domain.Delivery{{ID: "msg_nul_id", Type: "user.updated", UserID: "user_x", OccurredAt: time.Now(), Body: []byte(body)}})
	r2 := NewRunner(db2, nil, NewUsers())
	runToHead(t, r2)
	if _, _, failed := checkpointOf(t, db2, UsersName); failed != 1 {
		t.Fatalf("failed %d", failed)
	}
}

// quoting skips every event with a message holding a NUL and invalid UTF-8.
type quoting struct{}

func (quoting) Name() string    { return "quoting" }
func (quoting) Types() []string { return nil }
func (quoting) Apply(_ context.Context, _ *sqlx.Tx, events []domain.Event) ([]Failure, error) {
	var fs []Failure
	for _, e := range events {
		fs = append(fs, Failure{Position: e.Position, DeliveryID: e.DeliveryID, Err: fmt.Errorf("data names user_\x00\xff")})
	}
	return fs, nil
}
