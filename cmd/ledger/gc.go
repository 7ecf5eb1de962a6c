package main

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// GC settings of the long-running commands, used unless the operator sets
// GOGC or GOMEMLIMIT.
//
// serve: the live heap is small (25 MB in the soak) while each history page
// allocates about 0.4 MB in lib/pq, so at Go's default GOGC 100 a collection
// ran every few requests and competed with PostgreSQL for the cores: it made
// most of the history p99 (BenchmarkAudit: p99 4.9-6.3 ms at 100, 2.2-4.7 ms
// at 400, same runs). The limit keeps a burst of large pages, or a flood of
// connections, from growing the heap without bound: the live heap grows by
// ~14 kB per open connection, and at GOGC 400 the heap may reach five times
// the live heap, so 2,000 connections sending unauthenticated 1 MiB bodies
// (`ledger bench flood`) took serve to 194-314 MB within a 512 MiB limit,
// 133-174 MB within 150 MiB and 103-111 MB within 80 MiB. Ingest flat out
// (live heap 10-18 MB, projectors and sealer in process) reaches the limit:
// within 150 MiB its RSS peaked at 122 MB, within 80 MiB at 93-96 MB for
// CPU per delivery within the runs' noise (issue 15's goal is 100 MB), so
// 80 MiB; lighter loads stay below it, where only GOGC acts.
//
// pass (projections rebuild and check, audit verify and events, bench
// rebuild): one pass over the whole ledger, allocating per row in lib/pq and
// folding in memory; collecting less often is much of the speed, within 256
// MiB (audit verify of 1M events: 2.96-3.05 s at 400, 3.74-3.87 s at 100).
const (
	serveGCPercent = 400
	serveMemLimit  = 80 << 20
	passGCPercent  = 400
	passMemLimit   = 256 << 20
)

// tuneGC sets the collector's percent and soft memory limit for this process,
// unless env (the environment or .env, which the runtime itself never reads)
// sets GOGC or GOMEMLIMIT: then the operator owns the collector, and only
// what they set is applied (the other stays as the runtime has it). It
// returns the undo, which restores the previous settings (tests run commands
// in-process), and the GC percent now in force. Errors: EINVALID for a
// malformed GOGC or GOMEMLIMIT, named in the message.
func tuneGC(env func(string) string, percent int, limit int64) (undo func(), gcPercent int, err error) {
	gogc, memLimit := strings.TrimSpace(env("GOGC")), strings.TrimSpace(env("GOMEMLIMIT"))
	if gogc != "" || memLimit != "" {
		percent = debug.SetGCPercent(100)
		debug.SetGCPercent(percent)
		limit = debug.SetMemoryLimit(-1) // negative: only reads
	}
	if gogc != "" {
		if percent, err = parseGOGC(gogc); err != nil {
			return nil, 0, err
		}
	}
	if memLimit != "" {
		if limit, err = parseMemLimit(memLimit); err != nil {
			return nil, 0, err
		}
	}
	prevGC := debug.SetGCPercent(percent)
	prevLimit := debug.SetMemoryLimit(limit)
	return func() {
		debug.SetGCPercent(prevGC)
		debug.SetMemoryLimit(prevLimit)
	}, percent, nil
}

// parseGOGC parses GOGC as the runtime does: a percentage, or "off" or a
// negative number (-1: no collection but by the memory limit).
func parseGOGC(s string) (int, error) {
	if s == "off" {
		return -1, nil
	}
	n, err := strconv.ParseInt(s, 10, 32) // the runtime keeps an int32
	if err != nil || strings.HasPrefix(s, "+") {
		return 0, domain.Errorf(domain.EINVALID, "GOGC=%q: want a percentage such as 100, or off", s)
	}
	return int(max(n, -1)), nil
}

// parseMemLimit parses GOMEMLIMIT as the runtime does: bytes with an optional
// unit B, KiB, MiB, GiB or TiB, or "off" (no limit).
func parseMemLimit(s string) (int64, error) {
	if s == "off" {
		return math.MaxInt64, nil
	}
	n, err := parseByteSize(s)
	if err != nil {
		return 0, domain.Errorf(domain.EINVALID, "GOMEMLIMIT=%q: want bytes with an optional unit (B, KiB, MiB, GiB, TiB), such as 512MiB, or off", s)
	}
	return n, nil
}

// parseByteSize parses bytes with an optional unit B, KiB, MiB, GiB or TiB,
// as the runtime reads GOMEMLIMIT.
func parseByteSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			num, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult || strings.HasPrefix(num, "+") {
		return 0, fmt.Errorf("%q is not bytes with an optional unit", s)
	}
	return n * mult, nil
}

// gcSetting describes a GC percent for logs.
func gcSetting(percent int) string {
	if percent < 0 {
		return "off"
	}
	return fmt.Sprint(percent)
}
