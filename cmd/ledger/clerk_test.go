package main

import (
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// An invalid secret key: one clear line naming CLERK_SECRET_KEY (never the
// key), exit status 1, for each command that needs it.
func TestClerkCommandsRefuseAnInvalidSecretKey(t *testing.T) {
	for _, key := range []string{"", "pk_test_abcdefghijklmnopqrstuvwxyz", "sk_live_short", "sk_test_abcdefghijklmnop qrs"} {
		for _, args := range [][]string{{"import", "users"}} {
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
