package schema_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// How a delivery must be stored.
const (
	storedClear     = iota // no user: body in clear, body_sealed and body_commitment NULL
	storedSealed           // about a user: body '', sealed under their key, commitment kept
	storedDiscarded        // about an erased user: body '', body_sealed 0x00, commitment kept
	storedErased           // sealed, its user erased since: stored as storedSealed, reads erased
)

// awkward is text that tests every encoding on the way (text parameter,
// COPY's escapes, JSON's): backslashes, quotes, a tab, a newline, a
// percent sign, non-ASCII letters and an emoji.
const awkward = "Back\\slash \"quoted\"\tand\nnew line 100% Zoë Ünï 😀"

// Concurrent group commits mixing deliveries about users (sealed), about
// an erased user (discarded) and about organizations (clear), on the
// multi-row INSERT's text path (large groups) and its prepared statements
// (small groups), racing an import's COPY of snapshots of the three kinds
// and redeliveries of each kind: every row reads back as it must be
// (body, body_sealed NULL exactly for the clear rows, the commitment),
// opens to the exact delivered bytes with the key, redeliveries are
// duplicates (or a conflict for other bytes), and the log built over them
// verifies with the key and without it.
func TestMixedSealedAndClearGroupCommits(t *testing.T) {
	db, k, ctx := schematest.NewSealedDB(t)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

	want := map[string][]byte{}
	how := map[string]int{}
	var mu sync.Mutex
	expect := func(d domain.Delivery, kind int) {
		mu.Lock()
		defer mu.Unlock()
		want[d.ID], how[d.ID] = append([]byte(nil), d.Body...), kind
	}
	must := func(body []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	delivery := func(id string, body []byte) domain.Delivery {
		t.Helper()
		d, err := domain.NewDelivery(id, t0.Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", body)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// user_gone is erased before any of it: what arrives about them is
	// discarded at ingest.
	setup := schema.NewStore(db)
	setup.Keys = k
	first := delivery("msg_gone_0", must(clerkgen.Event("user.created", clerkgen.User{ID: "user_gone", Email: "gone@example.com", CreatedAt: t0, UpdatedAt: t0}, t0)))
	if _, err := setup.Append(ctx, first); err != nil {
		t.Fatal(err)
	}
	expect(first, storedErased)
	if _, _, err := schema.BeginErasure(ctx, db, schema.Erasure{UserID: "user_gone", At: t0, By: "test", Reason: "T-1"}); err != nil {
		t.Fatal(err)
	}
	k.Forget("user_gone")

	make1 := func(round, i int) (domain.Delivery, int) {
		at := t0.Add(time.Duration(round*1000+i) * time.Second)
		id := fmt.Sprintf("msg_r%d_%03d", round, i)
		switch {
		case i%10 == 9:
			return delivery(id, must(clerkgen.Event("user.updated", clerkgen.User{ID: "user_gone", Email: "gone@example.com", FirstName: awkward, CreatedAt: t0, UpdatedAt: at}, at))), storedDiscarded
		case i%2 == 0:
			return delivery(id, must(clerkgen.OrganizationEvent("organization.updated", clerkgen.Organization{ID: fmt.Sprintf("org_%d", i%5), Name: awkward, Slug: fmt.Sprintf("org-%d", i%5), CreatedAt: t0, UpdatedAt: at}, at))), storedClear
		default:
			return delivery(id, must(clerkgen.Event("user.updated", clerkgen.User{ID: fmt.Sprintf("user_%d", i%7), Email: fmt.Sprintf("u%d@example.com", i%7), LastName: awkward, CreatedAt: t0, UpdatedAt: at}, at))), storedSealed
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	var stores []*schema.Store
	// Round 0: one INSERT at a time, up to 200 rows (the text path); round
	// 1: groups of at most 8 (prepared statements).
	for round, maxBatch := range []int{200, 8} {
		s := schema.NewStore(db)
		s.Keys, s.MaxInFlight, s.MaxBatch = k, 1, maxBatch
		stores = append(stores, s)
		for i := range 120 {
			d, kind := make1(round, i)
			expect(d, kind)
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.AppendDelivery(ctx, d)
				if err == nil && res != domain.AppendStored {
					err = fmt.Errorf("%s: %v, want stored", d.ID, res)
				}
				if err != nil {
					errs <- err
				}
			}()
		}
	}
	// An import's page at the same time: user snapshots (sealed), one of
	// the erased user (discarded), organizations (clear), one COPY.
	var page []domain.Delivery
	for i := range 30 {
		upd := t0.Add(time.Duration(5000+i) * time.Second).UnixMilli()
		var d domain.Delivery
		var err error
		kind := storedSealed
		switch {
		case i == 29:
			d, err = domain.NewSnapshot("user_gone", upd, []byte(fmt.Sprintf(`{"object":"user","id":"user_gone","first_name":%q,"email_addresses":[],"created_at":%d,"updated_at":%d}`, awkward, t0.UnixMilli(), upd)))
			kind = storedDiscarded
		case i%2 == 0:
			d, err = domain.NewOrganizationSnapshot(fmt.Sprintf("org_s%d", i), upd, []byte(fmt.Sprintf(`{"object":"organization","id":"org_s%d","name":%q,"slug":"s%d","members_count":1,"created_at":%d,"updated_at":%d}`, i, awkward, i, t0.UnixMilli(), upd)))
			kind = storedClear
		default:
			d, err = domain.NewSnapshot(fmt.Sprintf("user_s%d", i), upd, []byte(fmt.Sprintf(`{"object":"user","id":"user_s%d","last_name":%q,"email_addresses":[],"created_at":%d,"updated_at":%d}`, i, awkward, t0.UnixMilli(), upd)))
		}
		if err != nil {
			t.Fatalf("snapshot %d: %v", i, err)
		}
		expect(d, kind)
		page = append(page, d)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			errs <- err
			return
		}
		defer tx.Rollback()
		ins, err := schema.AppendSnapshots(ctx, tx, page)
		if err == nil && len(ins) != len(page) {
			err = fmt.Errorf("the import stored %d of %d snapshots", len(ins), len(page))
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Redeliveries of each kind, in one group: duplicates; other bytes
	// under a stored id: a conflict, the stored body kept.
	var redo []domain.Delivery
	for _, i := range []int{0, 1, 9} {
		d, _ := make1(0, i)
		redo = append(redo, d)
	}
	changed, _ := make1(0, 3)
	changed.Body = bytes.Replace(changed.Body, []byte("u3@example.com"), []byte("x3@example.com"), 1)
	results := make([]domain.AppendResult, len(redo)+1)
	for i, d := range append(redo, changed) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if results[i], err = stores[0].AppendDelivery(ctx, d); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i, r := range results[:len(redo)] {
		if r != domain.AppendDuplicate {
			t.Errorf("redelivery of %s: %v, want duplicate", redo[i].ID, r)
		}
	}
	if r := results[len(redo)]; r != domain.AppendConflict {
		t.Errorf("other bytes under %s: %v, want conflict", changed.ID, r)
	}

	// Every row, read back raw and through the key.
	rows, err := db.Queryx(`SELECT delivery_id, body, body_sealed, body_commitment FROM events WHERE type <> $1`, domain.ErasureEventType)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var id, body string
		var sealed, commitment []byte
		if err := rows.Scan(&id, &body, &sealed, &commitment); err != nil {
			t.Fatal(err)
		}
		seen++
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected row %s", id)
			continue
		}
		switch how[id] {
		case storedClear:
			if body != string(w) || sealed != nil || commitment != nil {
				t.Errorf("%s (no user): body %q, body_sealed %x, commitment %x; want the body in clear, both NULL", id, body, sealed, commitment)
			}
		case storedSealed, storedErased:
			if body != "" || len(sealed) < 2 || sealed[0] != 1 || len(commitment) != domain.HashSize || bytes.Contains(sealed, []byte("example.com")) {
				t.Errorf("%s (a user's): body %q, body_sealed %d bytes (%x…), commitment %d bytes; want '' and sealed", id, body, len(sealed), sealed[:min(1, len(sealed))], len(commitment))
			}
		case storedDiscarded:
			if body != "" || !bytes.Equal(sealed, []byte{0}) || len(commitment) != domain.HashSize {
				t.Errorf("%s (erased user's): body %q, body_sealed %x, commitment %d bytes; want '', 00, a commitment", id, body, sealed, len(commitment))
			}
		}
		e, err := schema.EventByDeliveryID(ctx, db, id)
		if err != nil {
			t.Fatal(err)
		}
		switch how[id] {
		case storedDiscarded, storedErased:
			if !e.Erased || e.Body != nil {
				t.Errorf("%s reads as erased=%v with %d bytes", id, e.Erased, len(e.Body))
			}
		default:
			if e.Erased || !bytes.Equal(e.Body, w) {
				t.Errorf("%s reads back as %q (erased %v), want %q", id, e.Body, e.Erased, w)
			}
			if how[id] == storedSealed && domain.BodyCommitment(e.Salt, w) != [domain.HashSize]byte(commitment) {
				t.Errorf("%s: the stored commitment is not the one of its salt and body", id)
			}
		}
	}
	rows.Close()
	if seen != len(want) {
		t.Fatalf("%d rows, want %d", seen, len(want))
	}
	// The group commits did mix the kinds (else this test proves less
	// than it says).
	var mixed int
	if err := db.QueryRowx(`SELECT count(*) FROM (SELECT transaction_id FROM events WHERE source = 'svix'
GROUP BY transaction_id HAVING bool_or(body_sealed IS NULL) AND bool_or(body_sealed IS NOT NULL) AND count(*) <= 8) s`).Scan(&mixed); err != nil {
		t.Fatal(err)
	}
	var mixedLarge int
	if err := db.QueryRowx(`SELECT count(*) FROM (SELECT transaction_id FROM events WHERE source = 'svix'
GROUP BY transaction_id HAVING bool_or(body_sealed IS NULL) AND bool_or(body_sealed IS NOT NULL) AND count(*) > 32) s`).Scan(&mixedLarge); err != nil {
		t.Fatal(err)
	}
	if mixed == 0 || mixedLarge == 0 {
		t.Fatalf("%d small and %d large group commits mixed sealed and clear rows, want some of each", mixed, mixedLarge)
	}

	sealer := schematest.Sealer{Keys: k}
	sealer.SealAll(t, db, len(want)+1)
	signer, verifier := schematest.NewLogKey(t, "clerk-ledger/mixed-batch")
	schematest.SignCheckpoint(t, db, signer, "clerk-ledger/mixed-batch")
	for _, c := range []context.Context{ctx, context.Background()} {
		rep, err := schema.VerifyLog(c, db, verifier.Open)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK || rep.Checked != int64(len(want)+1) || rep.Checkpoints != 1 {
			t.Fatalf("verify: %+v", rep)
		}
	}
}

// Two imports storing the same snapshots at once with a master key, users'
// (sealed) and organizations' (clear) mixed: the second waits for the
// first's data keys and rows, falls back from COPY to INSERT … ON CONFLICT
// DO NOTHING with its sealed rows, and every row is stored once, sealed
// exactly when it is about a user, under the key that opens it.
func TestAppendSnapshotsRacingWritersSealed(t *testing.T) {
	db, _, ctx := schematest.NewSealedDB(t)
	ds := snapshots(t, 40)
	for i := range 10 {
		upd := int64(1700000000000 + i)
		d, err := domain.NewOrganizationSnapshot(fmt.Sprintf("org_%d", i), upd, []byte(fmt.Sprintf(`{"object":"organization","id":"org_%d","name":%q,"slug":"o%d","members_count":1,"created_at":1,"updated_at":%d}`, i, awkward, i, upd)))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	// The first writer holds users 0..24 and organizations 0..4.
	firstPart := append(append([]domain.Delivery(nil), ds[:25]...), ds[40:45]...)
	first, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback()
	if ins, err := schema.AppendSnapshots(ctx, first, firstPart); err != nil || len(ins) != 30 {
		t.Fatalf("first: %d %v", len(ins), err)
	}
	done := make(chan map[string]bool, 1)
	go func() {
		second, err := db.BeginTxx(ctx, nil)
		if err != nil {
			t.Error(err)
			done <- nil
			return
		}
		defer second.Rollback()
		ins, err := schema.AppendSnapshots(ctx, second, ds)
		if err == nil {
			err = second.Commit()
		}
		if err != nil {
			t.Error(err)
		}
		done <- ins
	}()
	time.Sleep(200 * time.Millisecond) // the second waits on the first's keys and index entries
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	if ins := <-done; len(ins) != 20 {
		t.Fatalf("second inserted %d, want the 20 the first did not", len(ins))
	}
	var n, keys int
	if err := db.QueryRow(`SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM user_keys)`).Scan(&n, &keys); err != nil || n != 50 || keys != 40 {
		t.Fatalf("%d events, %d data keys (%v); want 50 and 40", n, keys, err)
	}
	for _, d := range ds {
		var clear bool
		if err := db.QueryRow(`SELECT body_sealed IS NULL AND body_commitment IS NULL AND body <> '' FROM events WHERE delivery_id = $1`, d.ID).Scan(&clear); err != nil {
			t.Fatal(err)
		}
		if clear != (d.UserID == "") {
			t.Errorf("%s (user %q) stored in clear: %v", d.ID, d.UserID, clear)
		}
		e, err := schema.EventByDeliveryID(ctx, db, d.ID)
		if err != nil || e.Erased || !bytes.Equal(e.Body, d.Body) {
			t.Errorf("%s reads back as %q (%v), want %q", d.ID, e.Body, err, d.Body)
		}
	}
}
