package main

import (
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// TestBenchIngestAgainst: --against BUILD --rounds 2 runs two pairs, this
// build then BUILD, then BUILD then this build; BUILD's runs are served by
// BUILD (a wrapper that records each start and runs the ledger), on their
// own database; each pair's ratios are those of the figures the two runs
// printed, and the last line their medians.
func TestBenchIngestAgainst(t *testing.T) {
	t.Cleanup(func() { dropDatabases(t, "ledger_bench", otherDatabase) })
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	other := filepath.Join(dir, "other-ledger")
	script := "#!/bin/sh\necho \"$1\" >> '" + starts + "'\nexec '" + ledgerBinary(t) + "' \"$@\"\n"
	if err := os.WriteFile(other, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": schematest.ServerURL()}, "bench", "ingest", "--against", other, "--rounds", "2", "-d", "1s", "-c", "4")
	if code != 0 {
		t.Fatalf("bench ingest exited %d:\n%s%s", code, out, errOut)
	}
	b, err := os.ReadFile(starts)
	if err != nil || string(b) != "serve\nserve\n" {
		t.Errorf("the other build started %q (err %v), want serve twice, once a round", b, err)
	}
	if n := strings.Count(out, "other:    bench ingest: 4 senders for 1s -> "); n != 2 || !strings.Contains(out, "(the build "+other+", "+otherDatabase+")") {
		t.Errorf("want two runs of the other build, each naming it and its database:\n%s", out)
	}
	// One run: its rate line and its CPU line (service, postgres, senders, total).
	run := func(label string) string {
		return `(?m)^` + label + `:\s+([\d.]+) deliveries/s[^\n]*\n` + label + `\s+cpu per delivery: service (\d+) µs  postgres (\d+) µs  senders \(this process\) (\d+) µs  = (\d+) µs[^\n]*\n(?:.*\n)*?`
	}
	pair := func(first, second string, round int, order string) *regexp.Regexp {
		return regexp.MustCompile(run(first) + run(second) + `round ` + strconv.Itoa(round) + ` \(` + order + `\): this/other: cost ([\d.]+) \(CPU per delivery, service\+postgres\+senders\), own ([\d.]+) \(service\+postgres per senders' CPU\), rate ([\d.]+)\n`)
	}
	f := func(s string) float64 {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	type figures struct{ rate, svc, pg, snd, total float64 }
	fig := func(m []string, i int) figures {
		return figures{f(m[i]), f(m[i+1]), f(m[i+2]), f(m[i+3]), f(m[i+4])}
	}
	own := func(x figures) float64 { return (x.svc + x.pg) / x.snd }
	var costs, owns, rates []float64
	from := 0
	for _, p := range []struct {
		re          *regexp.Regexp
		this, other int // where each run's figures start in the match
	}{
		{pair("ledger", "other", 1, "this build first"), 1, 6},
		{pair("other", "ledger", 2, "the other build first"), 6, 1},
	} {
		// Each pair is looked for after the last: its runs are the ones
		// printed since the round before.
		at := p.re.FindStringSubmatchIndex(out[from:])
		if at == nil {
			t.Fatalf("no pair matching %s after the round before:\n%s", p.re, out)
		}
		var m []string
		for i := 0; i < len(at); i += 2 {
			m = append(m, out[from+at[i]:from+at[i+1]])
		}
		from += at[1]
		this, other := fig(m, p.this), fig(m, p.other)
		cost, ownRatio, rate := f(m[11]), f(m[12]), f(m[13])
		if !near(cost, this.total/other.total) || !near(ownRatio, own(this)/own(other)) || !near(rate, this.rate/other.rate) {
			t.Errorf("printed cost %.2f, own %.2f, rate %.2f; the runs' figures give %.2f, %.2f, %.2f:\n%s",
				cost, ownRatio, rate, this.total/other.total, own(this)/own(other), this.rate/other.rate, out)
		}
		costs, owns, rates = append(costs, cost), append(owns, ownRatio), append(rates, rate)
	}
	med, _ := printedNumbers(t, out, `^this/other over 2 rounds: median cost ([\d.]+) \(min ([\d.]+), max ([\d.]+)\), own ([\d.]+) \(min ([\d.]+), max ([\d.]+)\), rate ([\d.]+) \(min ([\d.]+), max ([\d.]+)\)$`)
	for i, xs := range [][]float64{costs, owns, rates} {
		want := []float64{(xs[0] + xs[1]) / 2, min(xs[0], xs[1]), max(xs[0], xs[1])}
		for j := range want {
			if !near(med[3*i+j], want[j]) {
				t.Errorf("medians line %v, want %v from the pairs' %v:\n%s", med, want, xs, out)
			}
		}
	}
	u, err := url.Parse(schematest.ServerURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + otherDatabase
	db := schematest.Open(t, u.String())
	var stored int
	if err := db.Get(&stored, `SELECT count(*) FROM events`); err != nil || stored == 0 {
		t.Errorf("the other build's database holds %d events (err %v), want its last run's", stored, err)
	}
}

// TestBenchIngestAgainstRefuses: an --against that is not a build, or with a
// flag it does not combine with, is refused with one line naming it, before
// any service starts.
func TestBenchIngestAgainstRefuses(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--against", filepath.Join(dir, "missing")}, "no such build"},
		{[]string{"--against", dir}, "is a directory"},
		{[]string{"--against", plain}, "is not executable"},
		{[]string{"--against", ledgerBinary(t), "--baseline"}, "does not combine"},
		{[]string{"--against", ledgerBinary(t), "--unsealed"}, "does not combine"},
		{[]string{"--against", ledgerBinary(t), "--ceiling"}, "does not combine"},
		{[]string{"--against", ledgerBinary(t), "--side-by-side"}, "does not combine"},
		{[]string{"--against", ledgerBinary(t), "--url", "http://127.0.0.1:1/api/webhooks/clerk"}, "does not combine"},
		{[]string{"--against", ledgerBinary(t), "--rounds", "0"}, "--rounds must be at least 1"},
	} {
		out, errOut, code := runLedger(t, nil, append([]string{"bench", "ingest", "-d", "1s"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) || strings.Contains(out, "bench ingest:") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want a refusal saying %q and no run", c.args, code, out, errOut, c.want)
		}
	}
}
