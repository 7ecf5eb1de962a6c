package main

import (
	"bytes"
	"context"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
)

// TestBenchRebuildVersus: `bench rebuild --versus` seeds the sealed
// database, rebuilds it and the clear one in rounds of alternating order and prints
// each round's sealed/clear and their median; it refuses a clear --db-name,
// a --versus database that is sealed or holds another history, and no
// rounds.
func TestBenchRebuildVersus(t *testing.T) {
	t.Parallel()
	master, err := userkeys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	dbName := func() string {
		u, err := url.Parse(schematest.NewURL(t))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(u.Path, "/")
	}
	clearDB, sealedDB, otherDB, shortDB := dbName(), dbName(), dbName(), dbName()
	bench := func(key string, args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		env := func(k string) string {
			switch k {
			case "DATABASE_URL":
				return schematest.ServerURL()
			case "LEDGER_MASTER_KEY":
				return key
			}
			return ""
		}
		err := run(context.Background(), append([]string{"bench", "rebuild", "--users", "30"}, args...), env, &out, &errOut)
		return out.String(), err
	}
	if out, err := bench("", "--db-name", clearDB, "--events", "400"); err != nil || !strings.Contains(out, "ratio ours/baseline") {
		t.Fatalf("clear rebuild: %v\n%s", err, out)
	}
	out, err := bench(master, "--db-name", sealedDB, "--events", "400", "--versus", clearDB, "--rounds", "3")
	if err != nil {
		t.Fatalf("--versus: %v\n%s", err, out)
	}
	if !strings.Contains(out, "round 1 (clear first): ") || !strings.Contains(out, "round 2 (sealed first): ") || !strings.Contains(out, "round 3 (clear first): ") {
		t.Fatalf("the rounds do not alternate their order:\n%s", out)
	}
	rounds := regexp.MustCompile(`(?m)^round [123] \((?:clear|sealed) first\): clear \S+ \(fold .*\), sealed \S+ \(fold .*\): sealed/clear [0-9.]+$`).FindAllString(out, -1)
	if len(rounds) != 3 || !regexp.MustCompile(`(?m)^sealed/clear over 3 rounds: median [0-9.]+ \(min [0-9.]+, max [0-9.]+\)$`).MatchString(out) {
		t.Fatalf("--versus printed:\n%s", out)
	}
	if _, err := bench(master, "--db-name", clearDB, "--versus", sealedDB); err == nil || !strings.Contains(err.Error(), "holds no sealed event") {
		t.Fatalf("a clear --db-name: %v", err)
	}
	if _, err := bench(master, "--db-name", otherDB, "--events", "400", "--versus", sealedDB); err == nil || !strings.Contains(err.Error(), "in clear") {
		t.Fatalf("a sealed --versus: %v", err)
	}
	if _, err := bench("", "--db-name", shortDB, "--events", "300"); err != nil {
		t.Fatal(err)
	}
	if _, err := bench(master, "--db-name", sealedDB, "--versus", shortDB); err == nil || !strings.Contains(err.Error(), "it holds 300 events") {
		t.Fatalf("a --versus of another history: %v", err)
	}
	if _, err := bench(master, "--db-name", sealedDB, "--versus", clearDB, "--rounds", "0"); err == nil || !strings.Contains(err.Error(), "--rounds") {
		t.Fatalf("no rounds: %v", err)
	}
}
