package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/clerksync"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"golang.org/x/time/rate"
)

// An invalid secret key: one clear line naming CLERK_SECRET_KEY (never the
// key), exit status 1, for each command that needs it.
func TestClerkCommandsRefuseAnInvalidSecretKey(t *testing.T) {
	for _, key := range []string{"", "pk_test_abcdefghijklmnopqrstuvwxyz", "sk_live_short", "sk_test_abcdefghijklmnop qrs"} {
		for _, args := range [][]string{{"import", "users"}, {"reconcile"}} {
			out, errOut, code := runLedger(t, map[string]string{"CLERK_SECRET_KEY": key, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/x"}, args...)
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if code != 1 || len(lines) != 1 || !strings.Contains(lines[0], "CLERK_SECRET_KEY") || out != "" {
				t.Errorf("%v with key %q: exit %d, stderr %q, stdout %q", args, key, code, errOut, out)
			}
			if key != "" && strings.Contains(errOut, key) {
				t.Errorf("the key is shown: %q", errOut)
			}
		}
	}
}

func TestImportUsersCommand(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 1200, Seed: 3})
	defer api.Close()
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_SECRET_KEY": api.SecretKey(), "CLERK_API_URL": api.URL(), "CLERK_API_RATE_LIMIT": "off"}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	bad := api.List()[600].ID
	if err := api.PutRaw(bad, []byte(`{"id":"`+bad+`","object":"user","created_at":1,"updated_at":"soon"}`)); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := ledger(t, env, "import", "users")
	if code, ok := err.(exitCode); !ok || code != 1 {
		t.Fatalf("a failed user must exit 1: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "imported 1199, unchanged 0, failed 1 users") || !strings.Contains(out, "failed: "+bad+" at position 600") {
		t.Fatalf("summary:\n%s", out)
	}
	// Plain progress lines off a terminal, with users/s.
	if !strings.Contains(errOut, "import users: importing") || !strings.Contains(errOut, "users/s") {
		t.Fatalf("progress:\n%s", errOut)
	}
	out, _, err = ledger(t, env, "import", "users")
	if err == nil || !strings.Contains(out, "imported 0, unchanged 1199, failed 1 users") {
		t.Fatalf("second import: %v\n%s", err, out)
	}
}

func TestReconcileCommand(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 40, Seed: 4})
	defer api.Close()
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_SECRET_KEY": api.SecretKey(), "CLERK_API_URL": api.URL(), "CLERK_API_RATE_LIMIT": "50"}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	out, _, err := ledger(t, env, "reconcile", "--dry-run")
	if err != nil || !strings.Contains(out, "40 users in Clerk, 0 live here: missing 40, stale 0, gone 0, same 0, deleted here 0; dry run, would repair 40, failed 0") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	out, _, err = ledger(t, env, "reconcile")
	if err != nil || !strings.Contains(out, "missing 40") || !strings.Contains(out, "repaired 40") {
		t.Fatalf("run: %v\n%s", err, out)
	}
}

func TestStatusCommandWarnsOfSilence(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	out, _, err := ledger(t, env, "status")
	if err != nil || !strings.Contains(out, "last delivery: none stored yet") || !strings.Contains(out, "last reconcile: never") {
		t.Fatalf("empty: %v\n%s", err, out)
	}
	db := schematest.Open(t, dsn)
	body := `{"data":{"id":"sess_1","user_id":"user_1","object":"session"},"object":"event","type":"session.created","timestamp":1716897660000}`
	d, err := domain.NewDelivery("msg_1", time.Now().Unix(), "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.NewStore(db).AppendDelivery(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	out, _, err = ledger(t, env, "status")
	if err != nil || !strings.Contains(out, "  session ") || strings.Contains(out, "WARNING") {
		t.Fatalf("fresh: %v\n%s", err, out)
	}
	env["LEDGER_SILENCE_WARN"] = "1ms"
	time.Sleep(5 * time.Millisecond)
	out, _, err = ledger(t, env, "status")
	if code, ok := err.(exitCode); !ok || code != 1 || !strings.Contains(out, "WARNING: no webhook delivery for") {
		t.Fatalf("silent: %v\n%s", err, out)
	}
	env["LEDGER_SILENCE_WARN"] = "soon"
	if _, _, err = ledger(t, env, "status"); err == nil || !strings.Contains(err.Error(), "LEDGER_SILENCE_WARN") {
		t.Fatalf("bad setting: %v", err)
	}
}

func TestReconcileEverySetting(t *testing.T) {
	every := map[string]time.Duration{"": 24 * time.Hour, "off": 0, "0": 0, "24h": 24 * time.Hour, "30m": 30 * time.Minute}
	for v, want := range map[string]string{"": "", "off": "", "0": "", "24h": "", "30m": "", "1m": "at least 10m0s", "daily": "LEDGER_RECONCILE_EVERY"} {
		a := &app{env: envOf(map[string]string{"LEDGER_RECONCILE_EVERY": v})}
		d, err := a.reconcileEvery(true)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) || (err == nil && d != every[v]) {
			t.Errorf("%q: %v %v", v, d, err)
		}
	}
	// Without a secret key the schedule is off unless asked for.
	if d, err := (&app{env: envOf(map[string]string{})}).reconcileEvery(false); d != 0 || err != nil {
		t.Errorf("no key, no setting: %v %v", d, err)
	}
	a := &app{env: envOf(map[string]string{"LEDGER_RECONCILE_EVERY": "24h"})}
	if _, err := a.reconcileEvery(false); err == nil || !strings.Contains(err.Error(), "CLERK_SECRET_KEY is not") {
		t.Errorf("without a key: %v", err)
	}
}

func TestImportOrganizationsCommand(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 1})
	defer api.Close()
	for i := range 3 {
		id := fmt.Sprintf("org_%d", i)
		raw := fmt.Sprintf(`{"id":%q,"object":"organization","name":"Org %d","slug":"org-%d","created_at":%d,"updated_at":%d}`, id, i, i, 1000+i, 2000+i)
		if err := api.PutOrganization(clerkapitest.Entry{ID: id, CreatedAt: int64(1000 + i), UpdatedAt: int64(2000 + i), Raw: []byte(raw)}); err != nil {
			t.Fatal(err)
		}
		mem := fmt.Sprintf(`{"id":"orgmem_%d","object":"organization_membership","role":"org:admin","organization":%s,"public_user_data":{"user_id":"user_%d"},"created_at":3000,"updated_at":3000}`, i, raw, i)
		if err := api.PutMembership(id, clerkapitest.Entry{ID: fmt.Sprintf("orgmem_%d", i), CreatedAt: 3000, UpdatedAt: 3000, Raw: []byte(mem)}); err != nil {
			t.Fatal(err)
		}
	}
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_SECRET_KEY": api.SecretKey(), "CLERK_API_URL": api.URL(), "CLERK_API_RATE_LIMIT": "off"}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	out, _, err := ledger(t, env, "import", "organizations")
	if err != nil || !strings.Contains(out, "imported 6, unchanged 0, failed 0 organizations and memberships") {
		t.Fatalf("%v\n%s", err, out)
	}
}

// An import killed (SIGKILL: a crash) mid-way resumes at the first page it
// had not stored, and one stopped with SIGTERM (Ctrl-C) says how to resume.
func TestImportUsersResumesAfterACrash(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 3000, Seed: 9})
	defer api.Close()
	api.SetDelay(150 * time.Millisecond) // slow pages: the kill lands mid-pass
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_SECRET_KEY": api.SecretKey(), "CLERK_API_URL": api.URL(), "CLERK_API_RATE_LIMIT": "off"}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	db := schematest.Open(t, dsn)
	place := func() int64 {
		var n int64
		if err := db.QueryRow(`SELECT coalesce(max(next_offset), 0) FROM clerk_imports`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	c := startLedger(t, env, "import", "users")
	deadline := time.Now().Add(30 * time.Second)
	for place() < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("the import made no progress\n%s", c.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.kill()
	at := place()
	if at >= 3000 {
		t.Fatalf("the import finished before the kill (place %d)", at)
	}
	api.SetDelay(400 * time.Millisecond)
	c = startLedger(t, env, "import", "users")
	for place() == at {
		if time.Now().After(deadline) {
			t.Fatalf("the resumed import made no progress\n%s", c.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if place() < 3000 {
		c.stop() // SIGTERM: stores what it fetched, then says how to resume
		if err := c.wait(20 * time.Second); err == nil || !strings.Contains(c.logs.String(), "run it again to resume") {
			t.Fatalf("stopped import: %v\n%s", err, c.logs.String())
		}
	}
	api.SetDelay(0)
	out, _, err := ledger(t, env, "import", "users")
	if err != nil || !strings.Contains(out, "(resumed at offset") {
		t.Fatalf("resumed: %v\n%s", err, out)
	}
	var events, distinct int64
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT user_id) FROM events`).Scan(&events, &distinct); err != nil || events != 3000 || distinct != 3000 {
		t.Fatalf("%d events for %d users, want 3000 each", events, distinct)
	}
}

func TestReconcileOnSchedule(t *testing.T) {
	api := clerkapitest.New(clerkapitest.Options{Users: 5})
	defer api.Close()
	cl, err := clerkapi.New(clerkapi.Config{SecretKey: api.SecretKey(), BaseURL: api.URL(), RateLimit: rate.Inf})
	if err != nil {
		t.Fatal(err)
	}
	db := schematest.NewDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	reconcileOnSchedule(ctx, slog.New(slog.DiscardHandler), clerksync.New(db, cl, nil), 400*time.Millisecond, 0)
	runs, err := schema.ReconcileRuns(context.Background(), db, 10)
	// No projector runs here: every run finds the 5 users missing from the
	// projection; the first stores their snapshots, the others nothing new.
	if err != nil || len(runs) < 2 || len(runs) > 4 || runs[0].Trigger != "schedule" || runs[len(runs)-1].Repaired != 5 || runs[0].Missing != 5 || runs[0].Repaired != 0 {
		t.Fatalf("%d runs: %+v %v", len(runs), runs, err)
	}
}
