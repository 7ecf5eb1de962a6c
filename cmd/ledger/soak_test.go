package main

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestBenchSoakShort runs `ledger bench soak` briefly against a real child
// service: it must send at the asked rate without a failed delivery, sample
// RSS and goroutines from the live process (goroutines through /metrics),
// report the projector's lag and call the run flat.
func TestBenchSoakShort(t *testing.T) {
	dsn := schematest.NewURL(t) // a unique name, dropped when the test ends
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": dsn},
		"bench", "soak", "--duration", "4s", "--interval", "1s", "--rate", "200", "-c", "4", "--db-name", name)
	if code != 0 {
		t.Fatalf("soak exited %d:\n%s%s", code, out, errOut)
	}
	// Sample lines: t sent non2xx errors rss_mb goroutines lag_events lag_s
	sample := regexp.MustCompile(`(?m)^\s+\d+s\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+([\d.]+)$`)
	rows := sample.FindAllStringSubmatch(out, -1)
	if len(rows) < 4 {
		t.Fatalf("want >= 4 samples with a goroutine count, got %d:\n%s", len(rows), out)
	}
	last := rows[len(rows)-1]
	sent, _ := strconv.Atoi(last[1])
	rss, _ := strconv.ParseFloat(last[4], 64)
	goroutines, _ := strconv.Atoi(last[5])
	// ~800 at 200/s for 4 s; the bound only catches a pacing that is
	// clearly broken (nothing sent, or no pacing at all), not slowness.
	if sent < 100 || sent > 2000 || last[2] != "0" || last[3] != "0" {
		t.Errorf("sent %s non-2xx %s errors %s; want ~800 sent and no failure", last[1], last[2], last[3])
	}
	if rss < 5 || goroutines < 5 {
		t.Errorf("rss %.1f MB, goroutines %d: not read from the live child", rss, goroutines)
	}
	if !strings.Contains(out, ": flat") {
		t.Errorf("no flat verdict:\n%s", out)
	}

	if _, _, code := runLedger(t, nil, "bench", "soak", "--db-name", "x; DROP"); code == 0 {
		t.Error("a malformed --db-name was accepted")
	}
}

// TestBenchFloodShort runs `ledger bench flood` briefly: every flood
// delivery is refused, nothing of it is stored, and a genuine delivery
// after the flood is stored.
func TestBenchFloodShort(t *testing.T) {
	dsn := schematest.NewURL(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	for _, mode := range []string{"stale", "forged"} {
		out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": dsn},
			"bench", "flood", "-c", "40", "-d", "2s", "--body-bytes", "300000", "--mode", mode, "--db-name", name)
		if code != 0 {
			t.Fatalf("%s: flood exited %d:\n%s%s", mode, code, out, errOut)
		}
		if !regexp.MustCompile(`server RSS: peak [\d.]+ MB`).MatchString(out) || !strings.Contains(out, "events stored: 0 from the flood, 2 genuine") {
			t.Errorf("%s: report:\n%s", mode, out)
		}
	}
}
