package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

func TestParseGCSettings(t *testing.T) {
	for s, want := range map[string]int{"100": 100, "0": 0, "400": 400, "off": -1, "-5": -1} {
		if got, err := parseGOGC(s); err != nil || got != want {
			t.Errorf("GOGC=%s: %d %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "+5", "fast", "100%", "1e3", "2147483648"} {
		if _, err := parseGOGC(s); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("GOGC=%q: %v, want EINVALID", s, err)
		}
	}
	for s, want := range map[string]int64{"1024": 1024, "512MiB": 512 << 20, "2GiB": 2 << 30, "7B": 7, "3KiB": 3 << 10, "1TiB": 1 << 40, "off": math.MaxInt64} {
		if got, err := parseMemLimit(s); err != nil || got != want {
			t.Errorf("GOMEMLIMIT=%s: %d %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "512MB", "MiB", "-1GiB", "+5MiB", "1.5GiB", "99999999999TiB"} {
		if _, err := parseMemLimit(s); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("GOMEMLIMIT=%q: %v, want EINVALID", s, err)
		}
	}
}

// TestTuneGC: the command's setting applies unless GOGC/GOMEMLIMIT are set
// (also through .env), and the undo restores what was there.
func TestTuneGC(t *testing.T) {
	read := func() (int, int64) {
		gc := debug.SetGCPercent(-1)
		debug.SetGCPercent(gc)
		return gc, debug.SetMemoryLimit(-1) // a negative limit only reads
	}
	gc0, limit0 := read()
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, c := range []struct {
		env       map[string]string
		gc        int
		limit     int64
		wantError bool
	}{
		{env: nil, gc: serveGCPercent, limit: serveMemLimit},
		// Either variable set: the operator owns the collector, and the
		// other stays as the runtime has it (our limit is not applied).
		{env: map[string]string{"GOGC": "150"}, gc: 150, limit: limit0},
		{env: map[string]string{"GOMEMLIMIT": "64MiB"}, gc: gc0, limit: 64 << 20},
		{env: map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, gc: -1, limit: 1 << 30},
		{env: map[string]string{"GOGC": "lots"}, wantError: true},
		{env: map[string]string{"GOMEMLIMIT": "1GB"}, wantError: true},
	} {
		undo, pct, err := tuneGC(env(c.env), serveGCPercent, serveMemLimit)
		if c.wantError {
			if domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("%v: %v, want EINVALID", c.env, err)
			}
			if undo != nil {
				undo()
			}
			if gc, limit := read(); gc != gc0 || limit != limit0 {
				t.Errorf("%v: a refused setting changed the GC to %d/%d", c.env, gc, limit)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", c.env, err)
		}
		if gc, limit := read(); gc != c.gc || limit != c.limit || pct != c.gc {
			t.Errorf("%v: GC %d (reported %d) limit %d, want %d and %d", c.env, gc, pct, limit, c.gc, c.limit)
		}
		undo()
		if gc, limit := read(); gc != gc0 || limit != limit0 {
			t.Errorf("%v: undo left %d/%d, want %d/%d", c.env, gc, limit, gc0, limit0)
		}
	}
}
