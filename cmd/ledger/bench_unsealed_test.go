package main

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
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

// TestBenchIngestUnsealedShort runs `ledger bench ingest --unsealed`
// briefly: it prints the unsealed run, then the sealed one, then ratios
// that agree with the two runs' printed figures; the unsealed run's
// database holds only bodies in clear, the sealed run's only sealed ones.
func TestBenchIngestUnsealedShort(t *testing.T) {
	u, err := url.Parse(schematest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabases(t, "ledger_bench", "ledger_bench_unsealed") })
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": u.String()}, "bench", "ingest", "--unsealed", "-d", "2s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	checkBenchBodies(t, *u)
	num := func(re string) []float64 {
		t.Helper()
		f, at := printedNumbers(t, out, re)
		return append(f, float64(at)) // and where the line is
	}
	rate := `\s+(\d+) deliveries/s  p50 [\d.]+ms  p95 [\d.]+ms  p99 [\d.]+ms  non-2xx (\d+)  errors (\d+)`
	cpu := ` cpu per delivery: service \d+ µs  postgres \d+ µs  senders \(this process\) \d+ µs  = (\d+) µs`
	plainRate, sealedRate := num(`^unsealed:`+rate), num(`^ledger:`+rate)
	plainCPU, sealedCPU := num(`^unsealed`+cpu), num(`^ledger  `+cpu)
	num(`^unsealed: server peak RSS: [\d.]+ MB$`)
	num(`^unsealed: users projector lag while sending`)
	ratio := num(`^sealed/unsealed: cost ([\d.]+) \(CPU per delivery, service\+postgres\+senders\), rate ([\d.]+)$`)
	if plainRate[3] > sealedRate[3] || sealedRate[3] > ratio[2] {
		t.Errorf("want the unsealed run, then the sealed one, then the ratios:\n%s", out)
	}
	for _, r := range [][]float64{plainRate, sealedRate} {
		if r[0] <= 0 || r[1] != 0 || r[2] != 0 {
			t.Errorf("a run sent %.0f/s with %.0f non-2xx and %.0f errors:\n%s", r[0], r[1], r[2], out)
		}
	}
	// The ratios are of the printed figures (rounded: within 3%).
	if !near(ratio[0], sealedCPU[0]/plainCPU[0]) || !near(ratio[1], sealedRate[0]/plainRate[0]) {
		t.Errorf("cost %.2f, rate %.2f; the runs give %.2f and %.2f:\n%s", ratio[0], ratio[1], sealedCPU[0]/plainCPU[0], sealedRate[0]/plainRate[0], out)
	}
	if _, _, code := runLedger(t, nil, "bench", "ingest", "--unsealed", "--url", "http://127.0.0.1:1/api/webhooks/clerk"); code == 0 {
		t.Error("--unsealed with --url was accepted")
	}
}

// printedNumbers finds the first line of out matching re (multi-line
// mode) and returns its groups as numbers and where the line starts; no
// such line fails t.
func printedNumbers(t *testing.T, out, re string) ([]float64, int) {
	t.Helper()
	m := regexp.MustCompile(`(?m)` + re).FindStringSubmatchIndex(out)
	if m == nil {
		t.Fatalf("no line matching %s:\n%s", re, out)
	}
	var f []float64
	for i := 2; i < len(m); i += 2 {
		v, _ := strconv.ParseFloat(out[m[i]:m[i+1]], 64)
		f = append(f, v)
	}
	return f, m[0]
}

// near reports whether a printed ratio got is want, a ratio of printed
// (rounded) figures, within 3%.
func near(got, want float64) bool { return got > 0 && math.Abs(got-want) <= 0.03*want+0.006 }

// dropDatabases drops the named databases of the test server (bench
// ingest's scratch databases), with any connection still open to them.
func dropDatabases(t *testing.T, names ...string) {
	admin, err := schema.Open(context.Background(), schematest.ServerURL(), schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		t.Error(err)
		return
	}
	defer admin.Close()
	for _, name := range names {
		if _, err := admin.Exec(`DROP DATABASE IF EXISTS ` + name + ` WITH (FORCE)`); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	}
}

// TestBenchIngestWarmUsers: with --users N --warm-users, bench ingest first
// sends one delivery about each of the N users, then times deliveries about
// those same users only: the ledger ends with N users and N data keys, one
// warm-up delivery each, and the warm-up line comes before the timed run's.
// --warm-users without --users is refused.
func TestBenchIngestWarmUsers(t *testing.T) {
	u, err := url.Parse(schematest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabases(t, "ledger_bench") })
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": u.String()}, "bench", "ingest", "--users", "50", "--warm-users", "-d", "1s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	warm := regexp.MustCompile(`(?m)^warm-up: one delivery about each of 50 users in \S+ \(not timed\), users projector caught up in \S+, tree projector caught up in \S+$`).FindStringIndex(out)
	timed := regexp.MustCompile(`(?m)^ledger:\s+\d+ deliveries/s .* non-2xx 0  errors 0`).FindStringIndex(out)
	if warm == nil || timed == nil || warm[0] > timed[0] {
		t.Fatalf("want the warm-up line, then the timed run's:\n%s", out)
	}
	u.Path = "/ledger_bench"
	db := schematest.Open(t, u.String())
	defer db.Close()
	var users, warmed, warmUsers, keys, total int
	if err := db.QueryRow(`SELECT count(DISTINCT user_id), count(*) FILTER (WHERE delivery_id LIKE 'msg\_%\_warm\_%'), count(DISTINCT user_id) FILTER (WHERE delivery_id LIKE 'msg\_%\_warm\_%'), (SELECT count(*) FROM user_keys), count(*) FROM events`).Scan(&users, &warmed, &warmUsers, &keys, &total); err != nil {
		t.Fatal(err)
	}
	if users != 50 || warmed != 50 || warmUsers != 50 || keys != 50 || total <= 50 {
		t.Errorf("%d users, %d warm-up deliveries about %d users, %d data keys, %d events; want 50, 50, 50, 50 and more than 50", users, warmed, warmUsers, keys, total)
	}
	if _, _, code := runLedger(t, nil, "bench", "ingest", "--warm-users", "-d", "1s"); code == 0 {
		t.Error("--warm-users without --users was accepted")
	}
}

// TestChildServiceFailureSaysWhy: a bench's child service that stops before
// it is ready is reported with the end of its log (which is then deleted),
// so the reason is on the bench's stderr: here --bench-unsealed refusing a
// master key.
func TestChildServiceFailureSaysWhy(t *testing.T) {
	_, err := startChildServiceExe(context.Background(), ledgerBinary(t), schematest.NewURL(t), clerkgen.NewSecret(), []string{"--" + benchUnsealedFlag}, "LEDGER_MASTER_KEY="+testMasterKey)
	if err == nil || !strings.Contains(err.Error(), "never became ready") || !strings.Contains(err.Error(), "takes no master key") {
		t.Fatalf("err = %v; want the child's refusal in it", err)
	}
}

// TestBenchIngestUnsealedRounds: --rounds 2 runs two pairs, the first
// unsealed then sealed, the second sealed then unsealed, prints each pair's
// ratios and then their median; --rounds without --unsealed, or below 1,
// is refused.
func TestBenchIngestUnsealedRounds(t *testing.T) {
	u, err := url.Parse(schematest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabases(t, "ledger_bench", "ledger_bench_unsealed") })
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": u.String()}, "bench", "ingest", "--unsealed", "--rounds", "2", "-d", "1s", "-c", "4", "--cpuprofile", prof)
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	// Both services are profiled: the sealed one to the file, the unsealed
	// one beside it (gzipped pprof protobufs).
	for _, f := range []string{prof, prof + ".unsealed"} {
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("CPU profile %s: %d bytes, %v", f, len(b), err)
		}
	}
	run := func(label string) string { return `(?m)^` + label + `:\s+\d+ deliveries/s[^\n]*\n(?:.*\n)*?` }
	pairs := regexp.MustCompile(run("unsealed") + run("ledger") + `sealed/unsealed: cost ([\d.]+) (?:.*\n)*?` + run("ledger") + run("unsealed") + `sealed/unsealed: cost ([\d.]+) `).FindStringSubmatch(out)
	if pairs == nil || strings.Count(out, "sealed/unsealed: cost") != 2 {
		t.Fatalf("want two pairs of runs, the second the other way round, each with its ratio:\n%s", out)
	}
	pairs = pairs[1:]
	med, _ := printedNumbers(t, out, `^sealed/unsealed over 2 rounds: median cost ([\d.]+) \(min ([\d.]+), max ([\d.]+)\)$`)
	a, _ := strconv.ParseFloat(pairs[0], 64)
	b, _ := strconv.ParseFloat(pairs[1], 64)
	if !near(med[1], min(a, b)) || !near(med[2], max(a, b)) || !near(med[0], (a+b)/2) {
		t.Errorf("median line %v for the pairs' %.2f and %.2f:\n%s", med, a, b, out)
	}
	if _, errOut, code := runLedger(t, nil, "bench", "ingest", "--rounds", "2", "-d", "1s"); code == 0 || !strings.Contains(errOut, "--rounds") {
		t.Errorf("--rounds without --unsealed: exit %d, %s", code, errOut)
	}
	for _, n := range []string{"0", "-1"} {
		if _, errOut, code := runLedger(t, nil, "bench", "ingest", "--unsealed", "--rounds", n, "-d", "1s"); code == 0 || !strings.Contains(errOut, "--rounds must be at least 1") {
			t.Errorf("--rounds %s: exit %d, %s", n, code, errOut)
		}
	}
}

// TestBenchIngestSideBySide: --side-by-side runs the unsealed and the
// sealing service at once on their own databases (each holds only its
// kind of body), prints each side's line with its CPU per delivery, and a
// cost that is the ratio of the two totals printed; it refuses to run
// without --unsealed or with a flag it does not combine with.
func TestBenchIngestSideBySide(t *testing.T) {
	u, err := url.Parse(schematest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dropDatabases(t, "ledger_bench", "ledger_bench_unsealed") })
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": u.String()}, "bench", "ingest", "--unsealed", "--side-by-side", "-d", "2s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	checkBenchBodies(t, *u)
	side := `\s+(\d+) deliveries/s  p50 [\d.]+ms  p99 [\d.]+ms  non-2xx (\d+)  errors (\d+)  cpu per delivery: service (\d+) µs  postgres (\d+) µs \+ shared (\d+) µs  senders (\d+) µs  = (\d+) µs  server peak RSS [\d.]+ MB$`
	plain, _ := printedNumbers(t, out, `^unsealed:`+side)
	sealed, _ := printedNumbers(t, out, `^ledger:`+side)
	round, _ := printedNumbers(t, out, `^side by side, round 1: 4 senders to each service for 2s; PostgreSQL ([\d.]+) s of CPU, ([\d.]+) s of it shared`)
	ratio, _ := printedNumbers(t, out, `^side by side, sealed/unsealed: cost ([\d.]+) \(CPU per delivery, service\+postgres\+senders\), ([\d.]+) \(service and its own backends alone\)$`)
	for _, r := range [][]float64{plain, sealed} {
		if r[0] <= 0 || r[1] != 0 || r[2] != 0 || r[3] <= 0 || r[4] <= 0 || r[6] <= 0 {
			t.Errorf("a side sent %.0f/s with %.0f non-2xx and %.0f errors, service %.0f µs, postgres %.0f µs, senders %.0f µs:\n%s", r[0], r[1], r[2], r[3], r[4], r[6], out)
		}
	}
	if round[0] <= 0 || round[1] > round[0] {
		t.Errorf("PostgreSQL %.2f s, %.2f s of it shared:\n%s", round[0], round[1], out)
	}
	if !near(ratio[0], sealed[7]/plain[7]) || !near(ratio[1], (sealed[3]+sealed[4])/(plain[3]+plain[4])) {
		t.Errorf("cost %.2f and %.2f; the sides give %.2f and %.2f:\n%s", ratio[0], ratio[1], sealed[7]/plain[7], (sealed[3]+sealed[4])/(plain[3]+plain[4]), out)
	}
	for _, args := range [][]string{{"--side-by-side"}, {"--unsealed", "--side-by-side", "--baseline"}, {"--unsealed", "--side-by-side", "--users", "5", "--warm-users"}} {
		if _, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": u.String()}, append([]string{"bench", "ingest", "-d", "1s"}, args...)...); code == 0 || !strings.Contains(errOut, "--side-by-side needs --unsealed") {
			t.Errorf("bench ingest %v: exit %d, %q", args, code, errOut)
		}
	}
}

// checkBenchBodies checks the scratch databases of bench ingest --unsealed
// on the server of u: the sealing run's (ledger_bench) holds only sealed
// bodies, the unsealed run's (ledger_bench_unsealed) only bodies in clear,
// and neither is empty.
func checkBenchBodies(t *testing.T, u url.URL) {
	t.Helper()
	for _, name := range []string{"ledger_bench", "ledger_bench_unsealed"} {
		u.Path = "/" + name
		db := schematest.Open(t, u.String())
		var sealed, inClear int
		if err := db.QueryRow(`SELECT count(*) FILTER (WHERE body_sealed IS NOT NULL), count(*) FILTER (WHERE body_sealed IS NULL) FROM events`).Scan(&sealed, &inClear); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if name == "ledger_bench" && (sealed == 0 || inClear != 0) || name == "ledger_bench_unsealed" && (inClear == 0 || sealed != 0) {
			t.Errorf("%s: %d sealed and %d clear events", name, sealed, inClear)
		}
	}
}
