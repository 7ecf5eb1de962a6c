package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestBenchIngestBaselineRounds: --baseline --rounds 2 runs two pairs, the
// ledger then the baseline, then the baseline then the ledger, prints each
// pair's ratio (the two rates printed, divided) and then their median; it
// refuses the flags it does not combine with.
func TestBenchIngestBaselineRounds(t *testing.T) {
	t.Cleanup(func() { dropDatabases(t, "ledger_bench") })
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": schematest.ServerURL()}, "bench", "ingest", "--baseline", "--rounds", "2", "-d", "1s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	ledger := `(?m)^ledger:\s+(\d+) deliveries/s[^\n]*\n(?:.*\n)*?`
	baseline := `baseline:\s+(\d+) inserts/s[^\n]*\n(?:.*\n)*?`
	m := regexp.MustCompile(ledger + baseline + `round 1 \(the ledger first\): ratio ([\d.]+) \(ledger / baseline\)\n(?:.*\n)*?` +
		baseline + `ledger:\s+(\d+) deliveries/s[^\n]*\n(?:.*\n)*?round 2 \(the baseline first\): ratio ([\d.]+) `).FindStringSubmatch(out)
	if m == nil || strings.Count(out, "\nround ") != 2 {
		t.Fatalf("want two pairs of runs, the second the other way round, each with its ratio:\n%s", out)
	}
	f := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	r1, r2 := f(m[3]), f(m[6])
	if !near(r1, f(m[1])/f(m[2])) || !near(r2, f(m[5])/f(m[4])) {
		t.Errorf("ratios %.2f and %.2f, for rates %s/%s and %s/%s:\n%s", r1, r2, m[1], m[2], m[5], m[4], out)
	}
	med, _ := printedNumbers(t, out, `^ledger/baseline over 2 rounds: median ratio ([\d.]+) \(min ([\d.]+), max ([\d.]+)\)$`)
	if !near(med[0], (r1+r2)/2) || !near(med[1], min(r1, r2)) || !near(med[2], max(r1, r2)) {
		t.Errorf("median line %v for the pairs' %.2f and %.2f:\n%s", med, r1, r2, out)
	}
	for _, extra := range [][]string{{"--ceiling"}, {"--warm-users", "--users", "5"}, {"--url", "http://127.0.0.1:1/api/webhooks/clerk"}} {
		if _, errOut, code := runLedger(t, nil, append([]string{"bench", "ingest", "--baseline", "--rounds", "2", "-d", "1s"}, extra...)...); code == 0 || !strings.Contains(errOut, "does not combine") {
			t.Errorf("--rounds with --baseline and %s: exit %d, %s", extra, code, errOut)
		}
	}
}
