package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

// TestEraseCommandAndMasterKey: serve seals what it stores; `ledger erase`
// erases a user (twice: nothing done; unknown: a clear error); serve
// refuses to start without LEDGER_MASTER_KEY, with a malformed one or with
// the wrong one, in one line that never holds the key; `ledger keys rotate`
// rewraps the keys, after which the old key is refused and the new one
// reads the other users' events.
func TestEraseCommandAndMasterKey(t *testing.T) {
	secret := clerkgen.NewSecret()
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": secret, "LEDGER_ADDR": freeAddr(t), "USER": "op"}
	stop := func() func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"serve"}, envOf(env), &syncBuffer{}, &syncBuffer{}) }()
		waitReady(t, env["LEDGER_ADDR"])
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	}()
	for _, u := range []string{"user_gone", "user_kept"} {
		if _, _, err := ledger(t, env, "webhook", "send", "user.created", "--user-id", u, "--first-name", "Persephone"); err != nil {
			t.Fatal(err)
		}
	}
	db := schematest.Open(t, dsn)
	schematest.WaitVisible(t, db)
	var clear int
	if err := db.Get(&clear, `SELECT count(*) FROM events WHERE body_sealed IS NULL OR strpos(body, 'Persephone') > 0`); err != nil || clear != 0 {
		t.Fatalf("%d events stored in clear by serve (%v)", clear, err)
	}

	out, _, err := ledger(t, env, "erase", "user_gone", "--reason", "ticket 7")
	if err != nil || !strings.Contains(out, "erased user user_gone") {
		t.Fatalf("erase: %q %v", out, err)
	}
	out, _, err = ledger(t, env, "erase", "user_gone", "--reason", "ticket 7")
	if err != nil || !strings.Contains(out, "already erased") || !strings.Contains(out, "cli:op") {
		t.Fatalf("second erase: %q %v", out, err)
	}
	if _, _, err = ledger(t, env, "erase", "user_never", "--reason", "x"); err == nil || !strings.Contains(err.Error(), "no event about user user_never") {
		t.Fatalf("unknown user: %v", err)
	}
	if _, _, err = ledger(t, env, "erase", "user_kept"); err == nil || !strings.Contains(err.Error(), "reason") {
		t.Fatalf("no reason: %v", err)
	}
	stop()

	other, err := userkeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(key, want string) {
		t.Helper()
		e := map[string]string{}
		for k, v := range env {
			e[k] = v
		}
		e["LEDGER_MASTER_KEY"] = key
		err := run(context.Background(), []string{"serve"}, envOf(e), &syncBuffer{}, &syncBuffer{})
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("serve with LEDGER_MASTER_KEY %.12q: %v, want one line with %q", key, err, want)
		}
		if err != nil && key != "" && strings.Contains(err.Error(), strings.TrimPrefix(key, userkeys.KeyPrefix)) {
			t.Errorf("the key was printed: %v", err)
		}
	}
	refuse("", "LEDGER_MASTER_KEY is not set")
	refuse(userkeys.KeyPrefix+"c2hvcnQ=", "LEDGER_MASTER_KEY must hold 32 bytes")
	refuse("/nonexistent/master.key", "LEDGER_MASTER_KEY is neither a master key")
	refuse(other, "is not the master key of this ledger")

	// Rotate to the other key: the old one is refused, the new one reads.
	out, _, err = ledger(t, env, "keys", "rotate", "--to", other)
	if err != nil || !strings.Contains(out, "rewrapped 1 data keys") {
		t.Fatalf("rotate: %q %v", out, err)
	}
	refuse(testMasterKey, "is not the master key of this ledger")
	k, _ := userkeys.Load(other)
	e, err := schema.EventByDeliveryID(schema.WithKeyring(context.Background(), k), db, firstDelivery(t, db, "user_kept"))
	if err != nil || !strings.Contains(string(e.Body), "Persephone") {
		t.Fatalf("read with the new key: %v", err)
	}
	if _, err := schema.EventByDeliveryID(withTestKeys(context.Background()), db, e.DeliveryID); err == nil {
		t.Error("the old key still opens a rotated data key")
	}
	out, _, err = ledger(t, env, "keys", "rotate", "--to", other)
	if err == nil {
		// The old key no longer wraps anything: a second rotation finds
		// every key already under the new one.
		if !strings.Contains(out, "rewrapped 0 data keys") {
			t.Errorf("second rotation: %q", out)
		}
	}
}

func firstDelivery(t *testing.T, db interface {
	Get(dest any, query string, args ...any) error
}, user string) string {
	t.Helper()
	var id string
	if err := db.Get(&id, `SELECT delivery_id FROM events WHERE user_id = $1 ORDER BY position LIMIT 1`, user); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseEraseAfterDelete(t *testing.T) {
	for v, want := range map[string]time.Duration{"": 0, "off": 0, "30d": 30 * 24 * time.Hour, "720h": 720 * time.Hour, "1h": time.Hour} {
		if got, err := parseEraseAfterDelete(v); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"30m", "-1d", "soon", "1.5d", "0s"} {
		if _, err := parseEraseAfterDelete(v); err == nil || !strings.Contains(err.Error(), "LEDGER_ERASE_AFTER_DELETE") {
			t.Errorf("%q: %v, want an error naming the setting", v, err)
		}
	}
}
