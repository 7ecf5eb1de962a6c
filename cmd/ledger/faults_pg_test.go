package main

// Real PostgreSQL faults: the service runs on a private cluster of the
// test's own (the one `ledger dev` starts, in a temp dir on a free port), and
// mid-stream the server itself is stopped (fast shutdown) or crashed
// (SIGKILL of the postmaster, then crash recovery). The shared cluster of the
// other tests is not touched.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// pgServer is a private PostgreSQL cluster a test stops, crashes and starts
// again. Its first server runs as a child of the test (through runuser when
// root), so that a SIGKILLed postmaster is reaped at once whatever the
// machine's init does with orphans; later ones are started with pg_ctl, as
// `ledger dev` and an operator do.
type pgServer struct {
	t         *testing.T
	cl        *privateCluster
	firstLog  string
	first     *exec.Cmd
	firstDone chan struct{}
}

// startPGServer creates a cluster in a temp dir, starts its server on a free
// port and returns it with the URL of a fresh database "ledger" on it. The
// server is stopped when the test ends.
func startPGServer(t *testing.T) (*pgServer, string) {
	t.Helper()
	if findPGBin() == "" {
		t.Fatal("no PostgreSQL binaries on this machine: .ci/run installs postgresql")
	}
	_, portStr, _ := strings.Cut(freeAddr(t), ":")
	port, _ := strconv.Atoi(portStr)
	tmp := reachableTempDir(t)
	cl, err := newPrivateCluster(filepath.Join(tmp, "postgres"), port)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.create(ctx); err != nil {
		t.Fatal(err)
	}
	p := &pgServer{t: t, cl: cl, firstLog: filepath.Join(tmp, "first-server.log"), firstDone: make(chan struct{})}
	logf, err := os.Create(p.firstLog)
	if err != nil {
		t.Fatal(err)
	}
	p.first = cl.command(context.Background(), "postgres", append([]string{"-D", cl.dir}, cl.serverArgs()...)...)
	p.first.Stdout, p.first.Stderr = logf, logf
	if err := p.first.Start(); err != nil {
		logf.Close()
		t.Fatalf("start postgres: %v", err)
	}
	go func() { p.first.Wait(); logf.Close(); close(p.firstDone) }()
	t.Cleanup(p.cleanup)

	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/ledger?sslmode=disable", port)
	waitFor(t, 30*time.Second, "the private PostgreSQL server accepting connections", func() (bool, string) {
		select {
		case <-p.firstDone:
			t.Fatalf("postgres exited at start-up\n%s", p.logs())
		default:
		}
		_, err := schema.CreateDatabase(context.Background(), dsn)
		return err == nil, fmt.Sprint(err)
	})
	return p, dsn
}

// cleanup stops the server (fast shutdown) unless it is down, and waits for
// the first server's process.
func (p *pgServer) cleanup() {
	if _, _, err := p.postmaster(); err == nil {
		if err := p.cl.stop(); err != nil {
			p.t.Errorf("%v\n%s", err, p.logs())
		}
	}
	select {
	case <-p.firstDone:
	case <-time.After(20 * time.Second):
		p.t.Errorf("the first postgres process is still running after the server was stopped\n%s", p.logs())
	}
}

// start starts the server again with pg_ctl (`ledger dev`'s start), which
// returns once it accepts connections: after a crash, once crash recovery
// is done.
func (p *pgServer) start() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := p.cl.start(ctx); err != nil {
		p.t.Fatalf("%v\n%s", err, p.logs())
	}
}

// postmaster returns the pid and the SysV shared memory id the running
// server wrote in postmaster.pid (lines 1 and 7).
func (p *pgServer) postmaster() (pid, shmID int, err error) {
	f, err := os.Open(filepath.Join(p.cl.dir, "postmaster.pid"))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var lines []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 7 {
		return 0, 0, fmt.Errorf("postmaster.pid has %d lines: %q", len(lines), lines)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return 0, 0, fmt.Errorf("postmaster.pid: pid %q", lines[0])
	}
	key := strings.Fields(lines[6])
	if len(key) != 2 {
		return 0, 0, fmt.Errorf("postmaster.pid: shared memory key line %q", lines[6])
	}
	if shmID, err = strconv.Atoi(key[1]); err != nil {
		return 0, 0, fmt.Errorf("postmaster.pid: shared memory id %q", key[1])
	}
	return pid, shmID, nil
}

// crash SIGKILLs the postmaster (pid from postmaster.pid), as the kernel's
// OOM killer or a `kill -9` would, and waits until it has exited and until
// none of its children, which notice its death and exit by themselves, still
// holds the cluster's shared memory: before that PostgreSQL refuses to start
// ("pre-existing shared memory block is still in use"). It returns the pid.
func (p *pgServer) crash() int {
	p.t.Helper()
	pid, shmID, err := p.postmaster()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill postmaster %d: %v", pid, err)
	}
	select {
	case <-p.firstDone:
	case <-time.After(20 * time.Second):
		p.t.Fatalf("postmaster %d (the test's first server) still running 20 s after SIGKILL", pid)
	}
	waitFor(p.t, 20*time.Second, "the killed server's processes leaving its shared memory", func() (bool, string) {
		n, err := shmAttached(shmID)
		if err != nil {
			p.t.Fatal(err)
		}
		return n == 0, fmt.Sprintf("%d processes still attached to shared memory id %d", n, shmID)
	})
	return pid
}

// shmAttached returns how many processes are attached to the SysV shared
// memory segment id (0 when it is gone), from /proc/sysvipc/shm.
func shmAttached(id int) (int, error) {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(string(b), "\n")
	col := -1
	for i, h := range strings.Fields(lines[0]) {
		if h == "nattch" {
			col = i
		}
	}
	if col < 0 {
		return 0, fmt.Errorf("/proc/sysvipc/shm has no nattch column: %q", lines[0])
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) > col && f[1] == strconv.Itoa(id) {
			return strconv.Atoi(f[col])
		}
	}
	return 0, nil
}

// logs returns the tail of the server's logs, for failure messages.
func (p *pgServer) logs() string {
	var b strings.Builder
	for _, f := range []string{p.firstLog, filepath.Join(p.cl.dir, "server.log")} {
		out, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		fmt.Fprintf(&b, "--- %s (last lines)\n%s\n", f, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}

// serverFault takes a private cluster's server down mid-stream.
type serverFault struct {
	what string
	// down takes the server down and returns once it is down (its processes
	// gone or going, so that it can be started again).
	down func(pg *pgServer)
	// pause is how long the server stays down before it is started again.
	pause time.Duration
}

// testServerFault runs `ledger serve` (projectors in-process) on a private
// cluster and streams 500 deliveries and 50 redeliveries from 8 Svix-like
// senders; once a quarter of the stream is answered, f takes the server
// down, and after f.pause it is started again with pg_ctl. Then: nothing
// was answered 2xx while the server was down but requests already past
// their commit; both projectors commit batches again; every failure was a
// 503 + Retry-After; the ledger holds each delivery once, byte for byte (so
// every delivery answered 2xx before the fault survived it); the projectors
// catch up (applied counts equal the ledger's) and check is clean; serve
// never exited. It logs how long ingest was unavailable: from the first
// failed attempt to the first 2xx to an attempt begun after the restart
// began, as the senders saw it (so it includes up to their 0.5 s retry
// backoff).
func testServerFault(t *testing.T, seed uint64, f serverFault) {
	pg, dsn := startPGServer(t)
	secret := clerkgen.NewSecret()
	serve, addr := startServe(t, dsn, secret)
	ds := history(t, 50, 500, seed)
	jobs := withRedeliveries(ds, 50, seed)
	s := newSender(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // generous: a loaded 2-core machine
	defer cancel()
	// The 2xx answers are checked against the ledger once the server is back
	// (the test reads the same server).
	st := startStream(ctx, s, addr, jobs, nil)
	waitFor(t, 20*time.Second, "a quarter of the stream answered", func() (bool, string) {
		return st.answered.Load() >= int64(len(jobs)/4), fmt.Sprint(st.answered.Load())
	})

	faultAt := time.Now()
	f.down(pg)
	downAt := time.Now()
	answeredDown := st.answered.Load()
	time.Sleep(f.pause)
	// Each of the 8 senders has at most one request in flight: only those
	// can still be answered 2xx (their commit came before the fault).
	if n := st.answered.Load() - answeredDown; n > 8 {
		t.Errorf("%d deliveries answered 2xx while the server was down", n)
	}
	startAt := time.Now()
	pg.start()
	upAt := time.Now()
	// Both projectors (users, tree) resume on their own: each commits a
	// batch again (the stream goes on, so there is something to apply).
	db := schematest.Open(t, dsn)
	waitFor(t, 30*time.Second, "the projectors resuming after the restart", func() (bool, string) {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM projection_checkpoints WHERE name IN ('users', 'tree') AND updated_at > $1`, startAt).Scan(&n); err != nil {
			return false, err.Error()
		}
		return n == 2, fmt.Sprintf("%d of 2 projectors committed a batch since the restart", n)
	})
	resumedAt := time.Now()
	st.wait(t)

	// Unavailable: from the first refused attempt to the first 2xx to an
	// attempt begun once the server was being started again (after a
	// SIGKILL, backends that have not yet noticed their postmaster's death
	// may still commit for a few milliseconds).
	firstFail, backAt := s.firstFailure(), s.firstOKBegunAfter(startAt)
	t.Logf("%s: %d jobs (%d distinct deliveries): %d attempts, %d not 2xx %v", f.what, len(jobs), len(ds), s.attempts.Load(), s.failures.Load(), s.codes)
	if firstFail.IsZero() || backAt.IsZero() {
		// (After a SIGKILL the first refusal may come after the restart
		// began: the kill and the wait for the old processes take only
		// milliseconds.)
		t.Fatalf("%s: the fault did not land mid-stream: first failed attempt %v, first 2xx begun after the restart %v", f.what, firstFail, backAt)
	}
	at := func(x time.Time) string { return "+" + ms(x.Sub(faultAt)) }
	t.Logf("%s, from the fault (t=0): first non-2xx %s, server down %s, pg_ctl start %s, returned %s, first 2xx %s, projectors resumed by %s: "+
		"ingest unavailable for %s, the server for %s",
		f.what, at(firstFail), at(downAt), at(startAt), at(upAt), at(backAt), at(resumedAt), ms(backAt.Sub(firstFail)), ms(upAt.Sub(faultAt)))
	// A server that is down is 503 + Retry-After (Svix retries); never a
	// 4xx, which would blame the sender, nor a 500.
	for what, n := range s.notRetryable() {
		t.Errorf("%d answers: %s\n%s", n, what, serve.logs.String())
	}

	requireEachOnceAndProjected(t, db, dsn, ds)
	select {
	case <-serve.done:
		t.Fatalf("serve exited: %v\n%s", serve.err, serve.logs.String())
	default:
	}
}

// TestFaultPostgresFastShutdown stops the service's PostgreSQL server with a
// fast shutdown (`pg_ctl stop -m fast`: sessions ended, open transactions
// rolled back) mid-stream and starts it again a second later.
func TestFaultPostgresFastShutdown(t *testing.T) {
	testServerFault(t, 41, serverFault{
		what: "fast shutdown",
		down: func(pg *pgServer) {
			if err := pg.cl.stop(); err != nil {
				t.Fatalf("%v\n%s", err, pg.logs())
			}
		},
		pause: time.Second,
	})
}

// TestFaultPostgresCrash SIGKILLs the postmaster of the service's PostgreSQL
// server mid-stream and starts it again at once: PostgreSQL recovers from
// its WAL (crash recovery), and every commit it acknowledged is there.
func TestFaultPostgresCrash(t *testing.T) {
	testServerFault(t, 42, serverFault{
		what: "postmaster SIGKILL",
		down: func(pg *pgServer) {
			pid := pg.crash()
			t.Logf("postmaster %d killed", pid)
		},
	})
}
