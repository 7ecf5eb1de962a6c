package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procTimes is a process's CPU time from /proc/PID/stat: its own user +
// system time, and that of its children it has waited for (reaped).
type procTimes struct {
	self, children time.Duration
}

// readProcTimes reads /proc/PID/stat; ok is false when the process is not
// there (not on this machine, or gone).
func readProcTimes(pid int) (t procTimes, ppid int, comm string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procTimes{}, 0, "", false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
	// the fields are counted from the last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procTimes{}, 0, "", false
	}
	comm = string(b[open+1 : end])
	f := bytes.Fields(b[end+1:])
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14-17.
	if len(f) < 15 {
		return procTimes{}, 0, "", false
	}
	num := func(i int) int64 { n, _ := strconv.ParseInt(string(f[i]), 10, 64); return n }
	tick := time.Second / clockTicks
	t.self = time.Duration(num(11)+num(12)) * tick
	t.children = time.Duration(num(13)+num(14)) * tick
	return t, int(num(1)), comm, true
}

// cpuOf returns the user + system CPU time pid has used (0 when unknown).
func cpuOf(pid int) time.Duration {
	t, _, _, _ := readProcTimes(pid)
	return t.self
}

// postmasterPID returns the PID of the PostgreSQL server db talks to, when it
// runs on this machine (its /proc entry is a "postgres" process), else 0.
func postmasterPID(ctx context.Context, db *sqlx.DB) int {
	var backend int
	if err := db.GetContext(ctx, &backend, `SELECT pg_backend_pid()`); err != nil {
		return 0
	}
	_, ppid, comm, ok := readProcTimes(backend)
	if !ok || comm != "postgres" {
		return 0
	}
	if _, _, comm, ok := readProcTimes(ppid); !ok || comm != "postgres" {
		return 0
	}
	return ppid
}

// postgresCPU returns the CPU time used so far by the PostgreSQL server whose
// postmaster is pid: the postmaster's own, its reaped children's (backends
// that ended), and every live child's (backends, WAL writer, checkpointer,
// autovacuum). Only this server's processes count, not other clusters'.
func postgresCPU(pid int) time.Duration {
	pm, _, _, ok := readProcTimes(pid)
	if !ok {
		return 0
	}
	total := pm.self + pm.children
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if t, ppid, _, ok := readProcTimes(child); ok && ppid == pid {
			total += t.self
		}
	}
	return total
}

// cpuMeter measures the CPU time a benchmark phase costs in the layers it can
// see: a service process, the PostgreSQL server and this process (the load
// senders). A layer it cannot see (pid 0) reads as 0 and is not printed.
type cpuMeter struct {
	servicePID, postmasterPID int
	service, postgres, self   time.Duration
	wall                      time.Time
}

func startCPUMeter(servicePID, postmaster int) *cpuMeter {
	m := &cpuMeter{servicePID: servicePID, postmasterPID: postmaster}
	m.service, m.postgres, m.self, m.wall = m.read()
	return m
}

func (m *cpuMeter) read() (service, postgres, self time.Duration, wall time.Time) {
	if m.servicePID > 0 {
		service = cpuOf(m.servicePID)
	}
	if m.postmasterPID > 0 {
		postgres = postgresCPU(m.postmasterPID)
	}
	return service, postgres, cpuOf(os.Getpid()), time.Now()
}

// cpuUse is the CPU time each layer used in one phase.
type cpuUse struct {
	service, postgres, self time.Duration
	wall                    time.Duration
	servicePID, postmaster  bool
}

func (m *cpuMeter) stop() cpuUse {
	s, p, self, wall := m.read()
	return cpuUse{service: s - m.service, postgres: p - m.postgres, self: self - m.self, wall: wall.Sub(m.wall),
		servicePID: m.servicePID > 0, postmaster: m.postmasterPID > 0}
}

// total is the CPU time of every layer the meter saw.
func (u cpuUse) total() time.Duration {
	t := u.self
	if u.servicePID {
		t += u.service
	}
	if u.postmaster {
		t += u.postgres
	}
	return t
}

// perUnit is total in µs per unit of n (0 for none).
func (u cpuUse) perUnit(n int64) float64 {
	if n <= 0 {
		return 0
	}
	return float64(u.total().Microseconds()) / float64(n)
}

// layers names the layers total counts, "+"-joined.
func (u cpuUse) layers() string {
	var l []string
	if u.servicePID {
		l = append(l, "service")
	}
	if u.postmaster {
		l = append(l, "postgres")
	}
	return strings.Join(append(l, "senders"), "+")
}

// line says what each layer cost per unit (µs of CPU per delivery) and how
// much of the machine's cores they took together.
func (u cpuUse) line(unit string, n int64, serviceName, selfName string) string {
	if n <= 0 {
		return "cpu: nothing done"
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	out := fmt.Sprintf("cpu per %s:", unit)
	total := u.total()
	if u.servicePID {
		out += fmt.Sprintf(" %s %.0f µs", serviceName, per(u.service))
	}
	if u.postmaster {
		out += fmt.Sprintf("  postgres %.0f µs", per(u.postgres))
	} else {
		out += "  postgres n/a (not on this machine)"
	}
	out += fmt.Sprintf("  %s %.0f µs  = %.0f µs", selfName, per(u.self), per(total))
	if u.wall > 0 {
		out += fmt.Sprintf("  (%.2f of %d cores busy with these)", total.Seconds()/u.wall.Seconds(), runtime.NumCPU())
	}
	return out
}
