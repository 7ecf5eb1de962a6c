package projections

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/prometheus/client_golang/prometheus"
)

// scrape registers c in a fresh registry, gathers it and returns every
// sample as `name{label="value",...}` -> value.
func scrape(t testing.TB, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			default:
				t.Fatalf("%s: unexpected metric type %v", key, mf.GetType())
			}
		}
	}
	return out
}

func wantSamples(t testing.TB, got map[string]float64, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("no sample %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
}

// The collector reports, from the database, where each projector and the
// tree stand: before the projectors run (everything is lag), after they
// caught up (checkpoint at the head, nothing unsealed), and during a rebuild
// held by another session.
func TestCollectorReportsProjectorsFromTheDatabase(t *testing.T) {
	t.Parallel()
	db := schematest.NewDB(t)
	ds := history(t, 3, 4, 25)
	load(t, db, ds)
	waitVisible(t, db)
	c := NewCollector(db, nil, UsersName, TreeName)
	head, err := schema.GateHead(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(ds))

	before := scrape(t, c)
	wantSamples(t, before, map[string]float64{
		"ledger_projections_up": 1,
		"ledger_head_position":  float64(head.Position),
		`ledger_projector_checkpoint_position{projector="users"}`: 0,
		`ledger_projector_lag_events{projector="users"}`:          n,
		`ledger_projector_lag_events{projector="tree"}`:           n,
		`ledger_projector_applied_total{projector="users"}`:       0,
		`ledger_projector_failed_total{projector="users"}`:        0,
		`ledger_projector_rebuild_running{projector="users"}`:     0,
		"ledger_log_unsealed_events":                              n,
		"ledger_log_tree_size":                                    0,
		"ledger_log_checkpoint_tree_size":                         0,
	})
	// 3 global, 8 per projector and 5 log samples: nothing missing, nothing else.
	if len(before) != 3+2*8+5 {
		t.Errorf("%d samples, want %d: %v", len(before), 3+2*8+5, before)
	}
	if before[`ledger_projector_lag_seconds{projector="users"}`] <= 0 {
		t.Errorf("lag seconds %v with events waiting", before[`ledger_projector_lag_seconds{projector="users"}`])
	}

	runToHead(t, NewRunner(db, nil, Default()...))
	cp, applied, _ := checkpointOf(t, db, UsersName)
	after := scrape(t, c)
	wantSamples(t, after, map[string]float64{
		"ledger_projections_up":                                   1,
		`ledger_projector_checkpoint_position{projector="users"}`: float64(cp.Position),
		`ledger_projector_checkpoint_position{projector="tree"}`:  float64(head.Position),
		`ledger_projector_lag_events{projector="users"}`:          0,
		`ledger_projector_lag_seconds{projector="users"}`:         0,
		`ledger_projector_applied_total{projector="users"}`:       float64(applied),
		`ledger_projector_applied_total{projector="tree"}`:        n,
		"ledger_log_unsealed_events":                              0,
		"ledger_log_sealing_lag_seconds":                          0,
		"ledger_log_tree_size":                                    n,
	})
	if applied == 0 || cp.Position == 0 {
		t.Fatalf("users projector did not run: checkpoint %s, applied %d", cp, applied)
	}

	// A rebuild in progress (its lock held, progress recorded) shows.
	lock, err := schema.LockRebuild(context.Background(), db, UsersName)
	if err != nil {
		t.Fatal(err)
	}
	lock.Progress(context.Background(), db, "fold", 7, 25)
	wantSamples(t, scrape(t, c), map[string]float64{
		`ledger_projector_rebuild_running{projector="users"}`:      1,
		`ledger_projector_rebuild_done_events{projector="users"}`:  7,
		`ledger_projector_rebuild_total_events{projector="users"}`: 25,
		`ledger_projector_rebuild_running{projector="tree"}`:       0,
	})
	lock.Release()
	wantSamples(t, scrape(t, c), map[string]float64{`ledger_projector_rebuild_running{projector="users"}`: 0})
}

// When the database does not answer, a scrape still succeeds: it reports
// ledger_projections_up 0 and no projector samples, within the timeout.
func TestCollectorDatabaseDown(t *testing.T) {
	t.Parallel()
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	proxy := schematest.NewProxy(t, dsn)
	c := NewCollector(schematest.Open(t, proxy.URL(dsn)), nil, UsersName)
	c.Timeout = 2 * time.Second
	if got := scrape(t, c); got["ledger_projections_up"] != 1 {
		t.Fatalf("up = %v with the database up", got["ledger_projections_up"])
	}
	proxy.Down()
	got := scrape(t, c)
	if up, ok := got["ledger_projections_up"]; !ok || up != 0 {
		t.Errorf("up = %v (present %v) with the database down, want 0", up, ok)
	}
	for k := range got {
		if strings.HasPrefix(k, "ledger_projector_") {
			t.Errorf("sample %s reported with the database down", k)
		}
	}
}
