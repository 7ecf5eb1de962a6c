package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

// `ledger dev` (make run) on a fresh ./.data with neither LEDGER_MASTER_KEY
// nor LEDGER_LOG_KEY set generates both (the master key readable by its
// owner only), and the `webhook send` line it prints works as printed,
// run with nothing else set: the delivery is stored sealed under a key the
// generated master key opens, and projected. A second dev on the same
// ./.data reuses the keys (the ledger accepts its own master key) and
// takes the printed line again.
func TestDevOnFreshDataGeneratesTheKeysAndTheSendLineWorks(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	dsn := uncreatedDatabaseURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "LEDGER_ADDR": freeAddr(t), "LEDGER_MASTER_KEY": "", "LEDGER_LOG_KEY": ""}
	startDev := func() (banner string, stop func()) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		var out, logs syncBuffer
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"dev"}, envOf(env), &out, &logs) }()
		waitReady(t, env["LEDGER_ADDR"])
		return out.String(), func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("dev: %v\n%s", err, logs.String())
			}
		}
	}
	sendPrinted := func(banner string) {
		t.Helper()
		i := strings.Index(banner, "CLERK_WEBHOOK_SIGNING_SECRET=")
		if i < 0 {
			t.Fatalf("no send line in the banner:\n%s", banner)
		}
		fields := strings.Fields(banner[i : i+strings.Index(banner[i:], "\n")])
		secret := strings.TrimPrefix(fields[0], "CLERK_WEBHOOK_SIGNING_SECRET=")
		// What the shell gives the printed line: that variable, nothing else.
		sendEnv := map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": secret, "LEDGER_MASTER_KEY": ""}
		var out bytes.Buffer
		if err := run(context.Background(), fields[2:], envOf(sendEnv), &out, &out); err != nil {
			t.Fatalf("the printed command %q failed: %v\n%s", fields[2:], err, out.String())
		}
	}
	banner, stop := startDev()
	for _, f := range []string{"master.key", "log.key", "webhook-secret"} {
		if _, err := os.Stat(filepath.Join(dir, ".data", f)); err != nil {
			t.Fatalf("dev did not keep ./.data/%s: %v", f, err)
		}
	}
	if st, _ := os.Stat(filepath.Join(dir, ".data", "master.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("./.data/master.key has mode %v, want 0600", st.Mode().Perm())
	}
	text, _ := os.ReadFile(filepath.Join(dir, ".data", "master.key"))
	k, err := userkeys.Load(strings.TrimSpace(string(text)))
	if err != nil {
		t.Fatalf("./.data/master.key: %v", err)
	}
	sendPrinted(banner)
	db := schematest.Open(t, dsn)
	waitFor := func(what, query string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int
			if err := db.Get(&n, query); err == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: never %d (%s)", what, want, query)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("Ada projected", `SELECT count(*) FROM users WHERE email = 'ada@example.com'`, 1)
	var id string
	if err := db.Get(&id, `SELECT delivery_id FROM events WHERE body = '' AND body_sealed IS NOT NULL AND type = 'user.created'`); err != nil {
		t.Fatalf("the delivery is not stored sealed: %v", err)
	}
	e, err := schema.EventByDeliveryID(schema.WithKeyring(context.Background(), k), db, id)
	if err != nil || !strings.Contains(string(e.Body), "Lovelace") {
		t.Fatalf("the generated master key does not open the delivery: %v", err)
	}
	stop()

	banner, stop = startDev()
	again, _ := os.ReadFile(filepath.Join(dir, ".data", "master.key"))
	if !bytes.Equal(again, text) {
		t.Fatal("the second dev replaced ./.data/master.key")
	}
	sendPrinted(banner)
	waitFor("the second delivery stored sealed", `SELECT count(*) FROM events WHERE type = 'user.created' AND body_sealed IS NOT NULL`, 2)
	stop()
}
