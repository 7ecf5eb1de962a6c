package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// serve --bench-unsealed on an empty database runs without a master key and
// stores a signed delivery's body in clear: the exact bytes, nothing sealed.
func TestServeBenchUnsealedStoresClear(t *testing.T) {
	secret := clerkgen.NewSecret()
	env := map[string]string{
		"DATABASE_URL":                 schematest.NewURL(t),
		"CLERK_WEBHOOK_SIGNING_SECRET": secret,
		"LEDGER_ADDR":                  freeAddr(t),
		"LEDGER_MASTER_KEY":            "",
	}
	logs := startService(t, env, "serve", "--"+benchUnsealedFlag)
	if !strings.Contains(logs.String(), "bodies are stored in clear") {
		t.Errorf("no warning that bodies are stored in clear:\n%s", logs.String())
	}
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_clear", Email: "clear@example.com", FirstName: "Clear"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+env["LEDGER_ADDR"]+"/api/webhooks/clerk", bytes.NewReader(body))
	req.Header = signer.Headers("msg_clear", time.Now(), body)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("delivery: %d, want 200\n%s", res.StatusCode, logs.String())
	}
	db := schematest.Open(t, env["DATABASE_URL"])
	var stored struct {
		Body   []byte `db:"body"`
		Clear  bool   `db:"clear"`
		UserID string `db:"user_id"`
	}
	if err := db.Get(&stored, `SELECT convert_to(body, 'UTF8') AS body, body_sealed IS NULL AS clear, user_id FROM events WHERE delivery_id = 'msg_clear'`); err != nil {
		t.Fatal(err)
	}
	if !stored.Clear || !bytes.Equal(stored.Body, body) || stored.UserID != "user_clear" {
		t.Errorf("stored clear %v, user %q, body %q; want clear, user_clear, the sent bytes %q", stored.Clear, stored.UserID, stored.Body, body)
	}
	var keys int
	if err := db.Get(&keys, `SELECT count(*) FROM user_keys`); err != nil || keys != 0 {
		t.Errorf("%d data keys made (err %v), want 0", keys, err)
	}
}

// serve --bench-unsealed refuses, in one line, a database that already
// holds an event, and a set master key.
func TestServeBenchUnsealedRefuses(t *testing.T) {
	dsn := schematest.NewURL(t)
	db := schematest.Open(t, dsn)
	if _, err := schema.Migrate(context.Background(), db.DB); err != nil {
		t.Fatal(err)
	}
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_held"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	d, err := domain.NewDelivery("msg_held", now, "v1,x", body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.NewStore(db).AppendDelivery(withTestKeys(context.Background()), d); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret(), "LEDGER_ADDR": freeAddr(t)}
	cases := []struct {
		masterKey string
		want      string
	}{
		{"", "refuses a database that already holds events"},
		{testMasterKey, "unset LEDGER_MASTER_KEY"},
	}
	for _, c := range cases {
		env["LEDGER_MASTER_KEY"] = c.masterKey
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := run(ctx, []string{"serve", "--" + benchUnsealedFlag}, envOf(env), &out, &errOut)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("master key %q: err %v, want one EINVALID line with %q", c.masterKey, err, c.want)
		}
	}
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events`); err != nil || n != 1 {
		t.Errorf("%d events (err %v), want the 1 held", n, err)
	}
}
