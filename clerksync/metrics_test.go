package clerksync_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

func TestMetricsTellSilenceAndDrift(t *testing.T) {
	e := newEnv(t, 20)
	c := clerksync.NewCollector(e.db, nil)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if text := gather(t, reg); text != "" {
		t.Fatalf("an empty ledger reports\n%s", text)
	}
	before := time.Now().Add(-time.Second)
	e.webhook("user.updated", e.api.List()[0].ID)
	body := `{"data":{"id":"sess_1","user_id":"user_1","object":"session"},"object":"event","type":"session.created","timestamp":1716897660000}`
	d, err := domain.NewDelivery("msg_sess", time.Now().Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.AppendDelivery(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	// A later import: snapshots are not deliveries.
	time.Sleep(20 * time.Millisecond)
	if _, err := e.sync.ImportUsers(context.Background(), clerksync.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	fams, err := schema.LastDeliveries(context.Background(), e.db)
	if err != nil || len(fams) != 2 || fams[0].Family != "session" || fams[1].Family != "user" || fams[0].ReceivedAt.Before(before) {
		t.Fatalf("last deliveries %+v %v", fams, err)
	}
	var snapAt time.Time
	if err := e.db.QueryRowx(`SELECT max(received_at) FROM events WHERE source = 'clerk_api'`).Scan(&snapAt); err != nil {
		t.Fatal(err)
	}
	if !fams[0].ReceivedAt.Before(snapAt) {
		t.Fatalf("the last delivery %v counts the import at %v", fams[0].ReceivedAt, snapAt)
	}
	e.project()
	e.api.Delete(e.api.List()[5].ID)
	if _, err := e.sync.Reconcile(context.Background(), clerksync.ReconcileOptions{}); err != nil {
		t.Fatal(err)
	}
	text := gather(t, reg)
	for _, want := range []string{`ledger_reconcile_drift_users{kind="gone"} 1`, `ledger_reconcile_drift_users{kind="same"} 19`, `ledger_reconcile_drift_users{kind="missing"} 0`,
		`ledger_reconcile_repaired_users 1`, `ledger_last_delivery_family_timestamp_seconds{family="session"}`, `ledger_last_delivery_family_timestamp_seconds{family="user"}`,
		`ledger_reconcile_last_run_timestamp_seconds{outcome="ok"}`} {
		if !strings.Contains(string(text), want) {
			t.Errorf("metrics lack %s:\n%s", want, text)
		}
	}
	if strings.Contains(string(text), `family="user.snapshot"`) || strings.Contains(string(text), `family="clerk_api"`) {
		t.Errorf("snapshots counted as deliveries:\n%s", text)
	}
}

// gather is the registry's metrics in Prometheus' text format.
func gather(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
