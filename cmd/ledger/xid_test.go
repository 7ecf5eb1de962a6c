package main

import (
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestXIDCounterBehindAfterRestore simulates a logical restore into a new
// cluster (watermill issue 576): a stored event whose transaction id is far
// ahead of the cluster's counter. `migrate xid` prints the pg_resetwal fix
// and exits non-zero, and serve refuses to start instead of storing
// deliveries no projector would read.
func TestXIDCounterBehindAfterRestore(t *testing.T) {
	t.Parallel()
	dsn := schematest.NewURL(t)
	if _, _, err := runCLI(t, dsn, "migrate"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, dsn, "migrate", "xid")
	if err != nil || !strings.Contains(out, "OK: the counter is ahead") {
		t.Fatalf("fresh database: %v\n%s", err, out)
	}

	db := schematest.Open(t, dsn)
	// epoch 7, xid 0x12345: what a restored row from a busy old cluster looks like.
	const restored = 7<<32 | 0x12345
	if _, err := db.Exec(`INSERT INTO events (transaction_id, message_uuid, delivery_id, type, occurred_at, body, svix_timestamp, svix_signature)
VALUES ($1::text::xid8, gen_random_uuid(), 'msg_restored', 'user.created', now(), '{}', 0, 'v1,x')`, restored); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, dsn, "migrate", "xid")
	if err == nil {
		t.Fatalf("migrate xid exited 0 with the counter behind:\n%s", out)
	}
	// The next epoch: every new xid8 is then above 7<<32 | anything.
	if !strings.Contains(out, "BEHIND") || !strings.Contains(out, `pg_resetwal -e 8 "$PGDATA"`) {
		t.Fatalf("migrate xid did not print the fix:\n%s", out)
	}

	env := map[string]string{"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret(), "LEDGER_ADDR": "127.0.0.1:0"}
	var stdout, stderr syncBuffer
	err = run(t.Context(), []string{"serve"}, envOf(env), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "ledger migrate xid") {
		t.Fatalf("serve with the counter behind: %v", err)
	}
}
