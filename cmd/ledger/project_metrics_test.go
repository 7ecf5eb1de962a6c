package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestProjectServesMetrics runs `ledger project` with LEDGER_METRICS_ADDR
// over a seeded ledger: GET /metrics shows the projectors' positions as
// they catch up (read from the database, as serve's) and GET /healthz
// answers; an address it cannot listen on stops it with one line naming
// the variable.
func TestProjectServesMetrics(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "warn"}
	if out, errOut, code := runLedger(t, env, "seed", "--users", "20", "--events", "200", "--seed", "3"); code != 0 {
		t.Fatalf("seed: exit %d\n%s%s", code, out, errOut)
	}
	addr, err := freeLocalAddr()
	if err != nil {
		t.Fatal(err)
	}
	penv := map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "warn", "LEDGER_METRICS_ADDR": addr}
	p := startLedger(t, penv, "project")
	get := func(path string) (int, string) {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	waitFor(t, 30*time.Second, "the users projector caught up in /metrics", func() (bool, string) {
		code, body := get("/metrics")
		return code == 200 && strings.Contains(body, `ledger_projector_lag_events{projector="users"} 0`) &&
			!strings.Contains(body, `ledger_projector_checkpoint_position{projector="users"} 0`), body[:min(len(body), 300)]
	})
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d", code)
	}
	if code, _ := get("/audit"); code != 404 {
		t.Fatalf("/audit on the metrics address: %d, want 404", code)
	}
	p.stop()
	if p.err != nil {
		t.Fatalf("project did not stop cleanly: %v\n%s", p.err, p.logs.String())
	}

	penv["LEDGER_METRICS_ADDR"] = "127.0.0.1:notaport"
	_, errOut, code := runLedger(t, penv, "project")
	if code == 0 || !strings.Contains(errOut, "LEDGER_METRICS_ADDR") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Fatalf("a bad LEDGER_METRICS_ADDR: exit %d, stderr %q", code, errOut)
	}
}

// TestProjectRunsTheProjectorsListed: with LEDGER_PROJECTORS=users,
// `ledger project` runs the users projector and no other (the tree sealer
// makes no checkpoint), so two processes can split the projectors; off
// would run none and is refused with one line naming the setting.
func TestProjectRunsTheProjectorsListed(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "warn"}
	if out, errOut, code := runLedger(t, env, "seed", "--users", "20", "--events", "200", "--seed", "4"); code != 0 {
		t.Fatalf("seed: exit %d\n%s%s", code, out, errOut)
	}
	db := schematest.Open(t, dsn)
	penv := map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "warn", "LEDGER_PROJECTORS": "users"}
	p := startLedger(t, penv, "project")
	waitFor(t, 30*time.Second, "the users projector applied the seeded events", func() (bool, string) {
		var n int
		err := db.Get(&n, `SELECT count(*) FROM users`)
		return err == nil && n == 20, fmt.Sprint(n, err)
	})
	p.stop()
	var names []string
	if err := db.Select(&names, `SELECT name FROM projection_checkpoints ORDER BY name`); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"users"}) {
		t.Fatalf("checkpoints of %q, want only users", names)
	}
	var leaves int
	if err := db.Get(&leaves, `SELECT count(*) FROM log_leaves`); err != nil || leaves != 0 {
		t.Fatalf("the tree sealer ran: %d leaves, %v", leaves, err)
	}
	penv["LEDGER_PROJECTORS"] = "off"
	_, errOut, code := runLedger(t, penv, "project")
	if code == 0 || !strings.Contains(errOut, "LEDGER_PROJECTORS is off") || strings.Count(strings.TrimSpace(errOut), "\n") > 0 {
		t.Fatalf("ledger project with LEDGER_PROJECTORS=off: exit %d, stderr %q", code, errOut)
	}
}
