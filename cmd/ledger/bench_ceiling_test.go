package main

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// The ceiling server is the webhook's real HTTP path with nothing stored:
// a signed delivery gets 200 "stored", a forged one 401, a malformed body
// 400, and closing its stdin stops it.
func TestCeilingServerIsTheWebhookPath(t *testing.T) {
	secret := clerkgen.NewSecret()
	cmd := exec.Command(ledgerBinary(t), "bench", "ceiling-server")
	cmd.Env = append(os.Environ(), ceilingSecretEnv+"="+secret)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("no address printed: %v", err)
	}
	target := "http://" + addr[:len(addr)-1] + "/api/webhooks/clerk"
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := clerkgen.NewSigner(clerkgen.NewSecret())
	if err != nil {
		t.Fatal(err)
	}
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_ceiling"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	send := func(s *clerkgen.Signer, id string, b []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(b))
		req.Header = s.Headers(id, time.Now(), b)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(res.Body)
		return res.StatusCode, buf.String()
	}
	if code, got := send(signer, "msg_ceiling_1", body); code != http.StatusOK || !bytes.Contains([]byte(got), []byte(`"stored"`)) {
		t.Errorf("signed delivery: %d %s, want 200 stored", code, got)
	}
	if code, got := send(forger, "msg_ceiling_2", body); code != http.StatusUnauthorized {
		t.Errorf("forged delivery: %d %s, want 401", code, got)
	}
	if code, got := send(signer, "msg_ceiling_3", []byte(`{"type":1}`)); code != http.StatusBadRequest {
		t.Errorf("malformed envelope: %d %s, want 400", code, got)
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ceiling server exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Error("ceiling server did not stop when its stdin closed")
	}
}

// bench ingest --baseline --ceiling prints, after the ledger's run and the
// baseline, the ceiling server's run and ratios that agree with the
// printed rates.
func TestBenchIngestCeilingShort(t *testing.T) {
	t.Cleanup(func() { dropDatabases(t, "ledger_bench") })
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": schematest.ServerURL()}, "bench", "ingest", "--baseline", "--ceiling", "-d", "1s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	num := func(re string) []float64 {
		t.Helper()
		f, _ := printedNumbers(t, out, re)
		return f
	}
	rate := `\s+(\d+) deliveries/s  p50 [\d.]+ms  p95 [\d.]+ms  p99 [\d.]+ms  non-2xx (\d+)  errors (\d+)`
	ledger, ceiling := num(`^ledger:`+rate), num(`^ceiling:`+rate)
	base := num(`^baseline:\s+(\d+) inserts/s`)
	num(`^ceiling  cpu per delivery: service \d+ µs  postgres n/a \(not on this machine\)  senders \(this process\) \d+ µs`)
	num(`^ceiling:  server peak RSS: [\d.]+ MB$`)
	ratios := num(`^ceiling ratio: ([\d.]+) \(HTTP and Svix only, nothing stored / baseline\); the ledger reaches ([\d.]+) of this ceiling$`)
	if ceiling[0] <= 0 || ceiling[1] != 0 || ceiling[2] != 0 {
		t.Errorf("ceiling run: %.0f/s, %.0f non-2xx, %.0f errors:\n%s", ceiling[0], ceiling[1], ceiling[2], out)
	}
	if !near(ratios[0], ceiling[0]/base[0]) || !near(ratios[1], ledger[0]/ceiling[0]) {
		t.Errorf("ratios %.2f, %.2f; the runs give %.2f and %.2f:\n%s", ratios[0], ratios[1], ceiling[0]/base[0], ledger[0]/ceiling[0], out)
	}
}
