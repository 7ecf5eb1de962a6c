package schema_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

func snapshots(t *testing.T, n int) []domain.Delivery {
	t.Helper()
	var ds []domain.Delivery
	for i := range n {
		id := fmt.Sprintf("user_%03d", i)
		d, err := domain.NewSnapshot(id, 1700000000000+int64(i), []byte(fmt.Sprintf(`{"id":%q,"object":"user","updated_at":%d,"note":"tab\there \\ back"}`, id, 1700000000000+int64(i))))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func TestAppendSnapshotsStoresOnceExactly(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	ds := snapshots(t, 300)
	ds = append(ds, ds[5]) // a repeat within the batch
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := schema.AppendSnapshots(ctx, tx, ds)
	if err != nil || len(ins) != 300 {
		t.Fatalf("%d inserted, %v", len(ins), err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	e, err := schema.EventByDeliveryID(ctx, db, ds[7].ID)
	if err != nil || string(e.Body) != string(ds[7].Body) || e.Source != "clerk_api" || e.Type != "user.snapshot" || e.SvixTimestamp != 0 || !e.OccurredAt.Equal(ds[7].OccurredAt) {
		t.Fatalf("stored %+v %v", e, err)
	}
	// Their transaction id is the inserting transaction's: the xid8 gate
	// lets readers see them in ledger order.
	schematest.WaitReadable(t, db, 300)
	tx, _ = db.BeginTxx(ctx, nil)
	defer tx.Rollback()
	ins, err = schema.AppendSnapshots(ctx, tx, append(snapshots(t, 301)[300:], ds[:100]...))
	if err != nil || len(ins) != 1 {
		t.Fatalf("again: %d inserted, %v", len(ins), err)
	}
	bad := ds[0]
	bad.Body = []byte("{\"id\":\"user_000\",\"x\":\"\x00\"}")
	if _, err := schema.AppendSnapshots(ctx, tx, []domain.Delivery{bad}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("a NUL body: %v", err)
	}
}

// Two writers storing the same snapshots at once: the second's COPY meets
// the first's rows and falls back to ON CONFLICT DO NOTHING; nothing is
// stored twice and nothing fails.
func TestAppendSnapshotsRacingWriters(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	ds := snapshots(t, 50)
	first, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback()
	if ins, err := schema.AppendSnapshots(ctx, first, ds[:30]); err != nil || len(ins) != 30 {
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
		if err != nil {
			t.Error(err)
		}
		if err := second.Commit(); err != nil {
			t.Error(err)
		}
		done <- ins
	}()
	time.Sleep(200 * time.Millisecond) // the second waits on the first's index entries
	if err := first.Commit(); err != nil {
		t.Fatal(err)
	}
	ins := <-done
	if len(ins) != 20 {
		t.Fatalf("second inserted %d, want the 20 the first did not", len(ins))
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&n); err != nil || n != 50 {
		t.Fatalf("%d events, %v", n, err)
	}
}

// Two import writers record their places in either order (each after its
// own page's transaction): a late, smaller place must neither move the
// place back nor take back the finish the last page recorded.
func TestSetImportPlaceLatePlaceKeepsTheFinish(t *testing.T) {
	db := schematest.NewDB(t)
	ctx := context.Background()
	if err := schema.StartImport(ctx, db, "users", 530); err != nil {
		t.Fatal(err)
	}
	// The writer of the last page (400..530) records first; the writer of
	// the page before it (300..400), racing it, second.
	if err := schema.SetImportPlace(ctx, db, "users", 530, true); err != nil {
		t.Fatal(err)
	}
	if err := schema.SetImportPlace(ctx, db, "users", 400, false); err != nil {
		t.Fatal(err)
	}
	st, ok, err := schema.ReadImport(ctx, db, "users")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if st.NextOffset != 530 || !st.Finished {
		t.Fatalf("import state %+v: want place 530, finished (the next import must start a new pass, not resume at the end)", st)
	}
}
