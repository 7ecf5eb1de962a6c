package main

import (
	"context"
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// bench ingest's CPU accounting reads /proc: this process's own times grow
// as it works, and the PostgreSQL server of the test database is found
// (its backend's parent) and its CPU time grows with a query's work.
func TestBenchCPUAccounting(t *testing.T) {
	self, ppid, comm, ok := readProcTimes(os.Getpid())
	if !ok || ppid != os.Getppid() || comm == "" {
		t.Fatalf("/proc/self/stat: ok %v ppid %d (want %d) comm %q", ok, ppid, os.Getppid(), comm)
	}
	// Hash until the process has used 50 ms more (however loaded the
	// machine, that comes), then check that hashing took at least as long.
	sum := sha256.Sum256(nil)
	start := time.Now()
	for cpuOf(os.Getpid())-self.self < 50*time.Millisecond {
		if time.Since(start) > 30*time.Second {
			t.Fatal("30 s of hashing never showed 50 ms of CPU time in /proc/self/stat")
		}
		for range 10000 {
			sum = sha256.Sum256(sum[:])
		}
	}
	if wall := time.Since(start); wall < 25*time.Millisecond { // two cores at most
		t.Errorf("50 ms of CPU time in %s of wall time: the times are not read in their unit", wall)
	}
	if _, _, _, ok := readProcTimes(-1); ok {
		t.Error("a process that does not exist was read")
	}

	db := schematest.NewDB(t)
	ctx := context.Background()
	pm := postmasterPID(ctx, db)
	if pm == 0 {
		t.Fatal("the test database's server was not found on this machine")
	}
	before := postgresCPU(pm)
	if _, err := db.ExecContext(ctx, `SELECT count(*) FROM generate_series(1, 3000000)`); err != nil {
		t.Fatal(err)
	}
	if spent := postgresCPU(pm) - before; spent < 50*time.Millisecond {
		t.Errorf("counting 3M rows cost the server %s of CPU time, want at least 50 ms", spent)
	}
	u := startCPUMeter(0, pm).stop()
	if line := u.line("delivery", 0, "service", "senders"); line != "cpu: nothing done" {
		t.Errorf("no deliveries: %q", line)
	}
}
