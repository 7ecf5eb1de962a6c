package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
)

// ledger runs `ledger args...` in-process and returns its stdout and error.
func ledger(t *testing.T, env map[string]string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, envOf(env), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestAuditCommands(t *testing.T) {
	secret := clerkgen.NewSecret()
	dsn := schematest.NewURL(t)
	skey, vkey, err := translog.GenerateKey("clerk-ledger/cli-test")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": secret, "USER": "op", "LEDGER_LOG_KEY": skey}
	if _, _, err := ledger(t, env, "migrate"); err != nil {
		t.Fatal(err)
	}
	db := schematest.Open(t, dsn)
	signer, _ := clerkgen.NewSigner(secret)
	store := schema.NewStore(db)
	at := time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC)
	var positions []int64
	for i := range 8 {
		typ := []string{"user.created", "user.updated", "session.created"}[i%3]
		when := at.Add(time.Duration(i) * time.Hour)
		body, _ := clerkgen.Event(typ, clerkgen.User{ID: "user_cli", Email: "c@example.com", FirstName: fmt.Sprint("N", i), UpdatedAt: when}, when)
		id := fmt.Sprintf("msg_%d", i)
		d, err := domain.NewDelivery(id, when.Unix(), signer.Headers(id, when, body).Get("svix-signature"), body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Append(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		e, _ := schema.EventByDeliveryID(context.Background(), db, id)
		positions = append(positions, e.Position)
	}
	var sealer schematest.Sealer
	sealer.SealAll(t, db, 8)
	logSigner, _ := translog.ParseSigner(skey)
	schematest.SignCheckpoint(t, db, logSigner, "clerk-ledger/cli-test")

	if out, _, err := ledger(t, env, "audit", "key"); err != nil || strings.TrimSpace(out) != vkey {
		t.Fatalf("key: %q %v, want %s", out, err, vkey)
	}
	out, _, err := ledger(t, env, "audit", "digest")
	if err != nil || !strings.HasPrefix(out, "clerk-ledger/cli-test\n8\n") {
		t.Fatalf("digest: %q %v", out, err)
	}
	if out, _, err := ledger(t, env, "audit", "verify", "--signatures"); err != nil || !strings.HasPrefix(out, "OK: 8 leaves match") ||
		!strings.Contains(out, "1 signed checkpoints match") || !strings.Contains(out, "8 signatures valid") {
		t.Fatalf("verify intact: %q %v", out, err)
	}
	if _, _, err := ledger(t, env, "audit", "verify", "--digest", "nonsense"); domain.ErrorCode(err) != domain.EINVALID || !strings.Contains(err.Error(), "--digest") {
		t.Errorf("bad --digest: %v", err)
	}

	out, _, err = ledger(t, env, "audit", "events", "--type", "user.*", "--format", "csv")
	recs, cerr := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || cerr != nil || len(recs) != 1+6 || recs[1][2] != "user.created" || recs[1][6] != "0" || len(recs[1][7]) != 44 {
		t.Errorf("events csv: %v %v %q", err, cerr, out)
	}
	out, stderr, err := ledger(t, env, "audit", "events", "--user-id", "user_cli", "--limit", "3")
	if err != nil || strings.Count(out, "user_cli") != 3 || !strings.Contains(stderr, "--cursor") {
		t.Errorf("events table: %v %q %q", err, out, stderr)
	}
	if _, _, err := ledger(t, env, "audit", "events", "--since", "May 1st"); err == nil || !strings.Contains(err.Error(), "--since") {
		t.Errorf("bad --since: %v", err)
	}
	out, _, err = ledger(t, env, "audit", "user", "user_cli", "--at", at.Add(90*time.Minute).Format(time.RFC3339))
	if err != nil || !strings.Contains(out, `"first_name": "N1"`) {
		t.Errorf("user --at: %v %s", err, out)
	}
	list, _ := schema.ListAccess(context.Background(), db, 0, 10)
	if len(list) != 4 || list[0].Actor != "cli:op" || list[0].Channel != schema.ChannelCLI || list[2].Action != schema.ActionExport || list[2].RowCount != 6 ||
		list[3].Action != schema.ActionCheckpoint {
		t.Errorf("access log: %+v", list)
	}
	// The change list as text: what each event changed, in time order.
	out, _, err = ledger(t, env, "audit", "user", "user_cli", "--changes", "--limit", "3")
	if err != nil || !strings.Contains(out, "user user_cli: N7; events 1-3 of 8, time order") || !strings.Contains(out, `first_name: "N0" -> "N1"`) ||
		!strings.Contains(out, "session.created  #"+fmt.Sprint(positions[2])+"  arrived") || !strings.Contains(out, `made from "192.0.2.10" "Mozilla/5.0`) {
		t.Errorf("user --changes: %v\n%s", err, out)
	}
	if _, _, err := ledger(t, env, "audit", "user", "user_cli", "--order", "arrival"); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("bad --order: %v", err)
	}

	// Edit a row as a superuser with the trigger off: both verifies catch it.
	schematest.Tamper(t, db, `UPDATE events SET body = replace(body, '"user_cli"', '"user_evil"') WHERE position = $1`, positions[2])
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "verify", "--signatures"}} {
		out, _, err := ledger(t, env, args...)
		var ec exitCode
		if !errors.As(err, &ec) || ec != 1 || !strings.Contains(out, fmt.Sprintf("first position that does not match: %d", positions[2])) {
			t.Errorf("%v after an edit: %v %q", args, err, out)
		}
	}
	// And a deleted row.
	dsn2 := schematest.NewURL(t)
	env2 := map[string]string{"DATABASE_URL": dsn2, "CLERK_WEBHOOK_SIGNING_SECRET": secret, "LEDGER_LOG_KEY": skey}
	if _, _, err := ledger(t, env2, "migrate"); err != nil {
		t.Fatal(err)
	}
	db2 := schematest.Open(t, dsn2)
	schematest.CopyEvents(t, db2, 5, func(i int) domain.Delivery {
		body, _ := clerkgen.Event("user.updated", clerkgen.User{ID: "user_d"}, at)
		id := fmt.Sprintf("msg_d%d", i)
		return domain.Delivery{ID: id, Timestamp: at.Unix(), Signature: signer.Headers(id, at, body).Get("svix-signature"), Body: body, Type: "user.updated", UserID: "user_d", OccurredAt: at}
	})
	var s2 schematest.Sealer
	s2.SealAll(t, db2, 5)
	schematest.Tamper(t, db2, `DELETE FROM events WHERE position = 3`)
	for _, args := range [][]string{{"audit", "verify"}, {"audit", "verify", "--signatures"}} {
		out, _, err := ledger(t, env2, args...)
		var ec exitCode
		if !errors.As(err, &ec) || ec != 1 || !strings.Contains(out, "first position that does not match: 3") || !strings.Contains(out, "missing") {
			t.Errorf("%v after a delete: %v %q", args, err, out)
		}
	}
}
