package main

// Fault tests: the real ledger binary, run as child processes against a
// fresh database, under a PostgreSQL outage (a TCP proxy taken down, backends
// terminated), SIGKILL of the projector and of a rebuild, two services on one
// database, and a long transaction holding the xid8 gate back. Loopback only;
// each test is bounded by deadlines well under a minute.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// binDir holds the ledger binary built once for the fault tests.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var buildLedger = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "ledger-faults-*")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "ledger")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func ledgerBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildLedger()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// withAppName returns dsn with application_name set, so a test can find
// (and terminate) one process's backends in pg_stat_activity.
func withAppName(dsn, name string) string {
	u, _ := url.Parse(dsn)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// child is a ledger child process.
type child struct {
	t    *testing.T
	args []string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
}

// startLedger starts `ledger args...` with env (over the test's environment)
// in a scratch directory; it is stopped (SIGTERM, then SIGKILL) when the
// test ends.
func startLedger(t *testing.T, env map[string]string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(ledgerBinary(t), args...)
	cmd.Dir = t.TempDir() // no ./.env
	cmd.Env = append(os.Environ(), "LEDGER_MASTER_KEY="+testMasterKey)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &child{t: t, args: args, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ledger %v: %v", args, err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.stop() })
	return c
}

// stop sends SIGTERM and waits up to 20 s, then kills.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.t.Errorf("ledger %v did not stop on SIGTERM; killing it\n%s", c.args, c.logs.String())
		c.kill()
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// wait waits up to d for the process to exit and returns its error.
func (c *child) wait(d time.Duration) error {
	select {
	case <-c.done:
		return c.err
	case <-time.After(d):
		c.t.Fatalf("ledger %v still running after %s\n%s", c.args, d, c.logs.String())
		return nil
	}
}

// runLedger runs `ledger args...` to completion (at most 60 s) and returns
// its stdout, stderr and exit code.
func runLedger(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ledgerBinary(t), args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "LEDGER_MASTER_KEY="+testMasterKey)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &exit):
		return out.String(), errOut.String(), exit.ExitCode()
	default:
		t.Fatalf("ledger %v: %v\n%s%s", args, err, out.String(), errOut.String())
		return "", "", -1
	}
}

// startServe starts `ledger serve` on dsn and waits until it is ready.
func startServe(t *testing.T, dsn, secret string) (*child, string) {
	t.Helper()
	addr := freeAddr(t)
	c := startLedger(t, map[string]string{
		"DATABASE_URL": dsn, "CLERK_WEBHOOK_SIGNING_SECRET": secret, "LEDGER_ADDR": addr, "LOG_LEVEL": "warn",
	}, "serve")
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return c, addr
			}
		}
		select {
		case <-c.done:
			t.Fatalf("ledger serve exited: %v\n%s", c.err, c.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger serve never became ready\n%s", c.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond every 20 ms until it holds, failing the test with what
// it last said after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sender delivers webhooks as Svix does: signed, retried after a short
// backoff on a non-2xx answer or a transport error, with the same svix-id and
// body, re-signed with a fresh timestamp on each attempt.
type sender struct {
	signer *clerkgen.Signer
	client *http.Client

	attempts, failures, stored atomic.Int64

	mu        sync.Mutex
	codes     map[string]int // non-2xx answers by status (and transport errors)
	failed    map[string]int // failed attempts by delivery id
	firstFail time.Time      // when the first attempt failed (zero while none did)
	oks       [][2]time.Time // each 2xx attempt: when it began, when it was answered
}

// firstFailure returns when the first attempt failed (zero if none did).
func (s *sender) firstFailure() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstFail
}

// firstOKBegunAfter returns when an attempt begun after t was first answered
// 2xx (zero if none was).
func (s *sender) firstOKBegunAfter(t time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first time.Time
	for _, ok := range s.oks {
		if ok[0].After(t) && (first.IsZero() || ok[1].Before(first)) {
			first = ok[1]
		}
	}
	return first
}

// notRetryable returns how many answers of each kind other than a 503 were
// given to failed attempts: a 4xx blames the sender, a 500 hides an outage,
// a 503 without Retry-After or a transport error means the service itself
// failed.
func (s *sender) notRetryable() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for what, n := range s.codes {
		if what != "503 Service Unavailable" {
			m[what] = n
		}
	}
	return m
}

// failedAttempts returns how many attempts to deliver id failed.
func (s *sender) failedAttempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed[id]
}

func (s *sender) count(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.codes[what]++
}

func newSender(t *testing.T, secret string) *sender {
	t.Helper()
	s, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	return &sender{signer: s, client: &http.Client{Timeout: 15 * time.Second}, codes: map[string]int{}, failed: map[string]int{}}
}

// deliver sends d to addr until it is answered 2xx or ctx ends. It returns
// the outcome the service answered ("stored" or "duplicate").
func (s *sender) deliver(ctx context.Context, addr string, d domain.Delivery) (string, error) {
	backoff := 20 * time.Millisecond
	for {
		s.attempts.Add(1)
		began := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/webhooks/clerk", bytes.NewReader(d.Body))
		if err != nil {
			return "", err
		}
		req.Header = s.signer.Headers(d.ID, time.Now(), d.Body)
		res, err := s.client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode/100 == 2 {
				s.mu.Lock()
				s.oks = append(s.oks, [2]time.Time{began, time.Now()})
				s.mu.Unlock()
				var a struct{ Status string }
				if err := json.Unmarshal(body, &a); err != nil {
					return "", fmt.Errorf("delivery %s: 2xx answer %q: %v", d.ID, body, err)
				}
				if a.Status == "stored" {
					s.stored.Add(1)
				}
				return a.Status, nil
			}
			if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
				s.count("503 without Retry-After")
			} else {
				s.count(res.Status)
			}
		} else {
			s.count("transport error")
		}
		s.failures.Add(1)
		s.mu.Lock()
		s.failed[d.ID]++
		if s.firstFail.IsZero() {
			s.firstFail = time.Now()
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("delivery %s never answered 2xx: %w", d.ID, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// history returns the deliveries of a synthetic shuffled history (about
// users users, some deliveries repeating content under new ids).
func history(t *testing.T, users, events int, seed uint64) []domain.Delivery {
	t.Helper()
	h, err := clerkgen.NewHistory(clerkgen.HistoryOptions{Users: users, Events: events, Seed: seed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ds := make([]domain.Delivery, h.Len())
	for i := range ds {
		if ds[i], err = h.Delivery(i); err != nil {
			t.Fatal(err)
		}
	}
	return ds
}

var userEventTypes = pq.Array([]string{"user.created", "user.updated", "user.deleted"})

// ledgerCounts returns how many events and user events the ledger holds.
func ledgerCounts(t *testing.T, db *sqlx.DB) (all, user int64) {
	t.Helper()
	if err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE type = ANY($1)) FROM events`, userEventTypes).Scan(&all, &user); err != nil {
		t.Fatal(err)
	}
	return all, user
}

// checkpoint returns projector name's applied and failed counters (-1 when
// it has no checkpoint yet).
func checkpoint(t *testing.T, db *sqlx.DB, name string) (applied, failed int64) {
	t.Helper()
	err := db.QueryRow(`SELECT applied, failed FROM projection_checkpoints WHERE name = $1`, name).Scan(&applied, &failed)
	if errors.Is(err, sql.ErrNoRows) {
		return -1, -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return applied, failed
}

// waitCaughtUp waits until the users projector has applied every user event
// and the tree sealer every event, exactly once each: the counters equal
// the ledger's counts (a double application would overshoot them).
func waitCaughtUp(t *testing.T, db *sqlx.DB, d time.Duration) {
	t.Helper()
	waitFor(t, d, "projectors catch up", func() (bool, string) {
		all, user := ledgerCounts(t, db)
		ua, uf := checkpoint(t, db, "users")
		ca, cf := checkpoint(t, db, "tree")
		if ua > user || ca > all {
			t.Fatalf("applied more than the ledger holds: users %d of %d user events, tree %d of %d events", ua, user, ca, all)
		}
		if ua == user && uf == 0 && ca == all && cf == 0 {
			return true, ""
		}
		msg := fmt.Sprintf("users applied %d failed %d of %d user events; tree applied %d failed %d of %d events", ua, uf, user, ca, cf, all)
		// The gate is cluster-wide: say who holds it, when someone does.
		if g, err := schema.ReadGate(context.Background(), db); err == nil && g.Waiting > 0 {
			msg += fmt.Sprintf("; %d events wait behind the gate", g.Waiting)
			if b := g.BlockedBy; b != nil {
				msg += fmt.Sprintf(", held by pid %d on database %s (%s, open %.1fs)", b.PID, b.Database, b.State, b.AgeSeconds)
			}
		}
		return false, msg
	})
}

// checkUsers runs `ledger projections check users` and fails unless it finds
// no difference.
func checkUsers(t *testing.T, dsn string) {
	t.Helper()
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": dsn}, "projections", "check", "users")
	if code != 0 || !strings.Contains(out, "no differences") {
		t.Fatalf("projections check users: exit %d\n%s%s", code, out, errOut)
	}
}

// TestFaultPostgresOutageMidStream sends a stream of deliveries (with
// duplicates) through a Svix-like retrying sender to a service whose database
// connection goes through a proxy; mid-stream the proxy goes down and comes
// back, and later every backend of the service is terminated. Every delivery
// answered 2xx is committed at that moment, byte for byte, and stored once;
// after the retries all are; the projection then passes check.
func TestFaultPostgresOutageMidStream(t *testing.T) {
	dsn := schematest.NewURL(t)
	proxy := schematest.NewProxy(t, dsn)
	secret := clerkgen.NewSecret()
	serve, addr := startServe(t, withAppName(proxy.URL(dsn), "faults_serve"), secret)
	db := schematest.Open(t, dsn)

	ds := history(t, 50, 500, 11)
	jobs := withRedeliveries(ds, 50, 11)
	s := newSender(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // generous: a loaded 2-core machine
	defer cancel()
	st := startStream(ctx, s, addr, jobs, func(ctx context.Context, d domain.Delivery) error {
		// 2xx means committed: the row is there now, byte for byte.
		e, err := schema.EventByDeliveryID(withTestKeys(ctx), db, d.ID)
		if err != nil {
			return fmt.Errorf("delivery %s answered 2xx but not in the ledger: %v", d.ID, err)
		}
		if !bytes.Equal(e.Body, d.Body) {
			return fmt.Errorf("delivery %s stored with another body", d.ID)
		}
		return nil
	})
	waitFor(t, 20*time.Second, "a quarter of the stream answered", func() (bool, string) {
		return st.answered.Load() >= int64(len(jobs)/4), fmt.Sprint(st.answered.Load())
	})
	proxy.Down()
	failedBefore := s.failures.Load()
	downAt := st.answered.Load()
	waitFor(t, 10*time.Second, "deliveries refused while the database is down", func() (bool, string) {
		return s.failures.Load()-failedBefore >= 40, fmt.Sprint(s.failures.Load() - failedBefore)
	})
	if got := st.answered.Load(); got > downAt+8 {
		// Only requests already past their commit can be answered 2xx now.
		t.Errorf("%d deliveries answered 2xx while the database was down", got-downAt)
	}
	proxy.Up()
	waitFor(t, 20*time.Second, "half the stream answered after the outage", func() (bool, string) {
		return st.answered.Load() >= int64(len(jobs)/2), fmt.Sprint(st.answered.Load())
	})
	var killed int
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'faults_serve' AND pid <> pg_backend_pid()) t`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Error("the service had no backend to terminate")
	}
	st.wait(t)
	t.Logf("%d jobs (%d distinct deliveries): %d attempts, %d not 2xx %v; %d backends terminated",
		len(jobs), len(ds), s.attempts.Load(), s.failures.Load(), s.codes, killed)
	// A database outage is 503 + Retry-After (Svix retries); never a 4xx,
	// which would blame the sender.
	for what, n := range s.notRetryable() {
		t.Errorf("%d answers: %s", n, what)
	}

	// Every delivery once; nothing else.
	requireEachOnceAndProjected(t, db, dsn, ds)
	select {
	case <-serve.done:
		t.Fatalf("serve exited during the outage: %v\n%s", serve.err, serve.logs.String())
	default:
	}
}

// holdingXID reports whether a backend of application app on dsn's database
// is inside a transaction that has written (holds a transaction id).
func holdingXID(t *testing.T, db *sqlx.DB, app string) bool {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1 AND backend_xid IS NOT NULL`, app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestFaultProjectKilledMidBatch SIGKILLs `ledger project` several times
// while a 30k-event history is being loaded or its backlog applied, each
// time while one of its batches is writing, then restarts it: every user event is applied exactly once
// (the applied counters equal the ledger's counts) and check is clean.
func TestFaultProjectKilledMidBatch(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn}
	if out, errOut, code := runLedger(t, env, "migrate"); code != 0 {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errOut)
	}
	db := schematest.Open(t, dsn)
	t0 := time.Now()
	seed := startLedger(t, env, "seed", "--users", "3000", "--events", "30000", "--seed", "5")
	projEnv := map[string]string{"DATABASE_URL": withAppName(dsn, "faults_project"), "LOG_LEVEL": "warn"}
	// Each kill lands while a batch is writing, and (after the first) once
	// the previous run committed at least one batch, so each restart resumes
	// from a checkpoint in the middle of the ledger.
	last := int64(-1)
	for kill := 1; kill <= 3; kill++ {
		p := startLedger(t, projEnv, "project")
		waitFor(t, 20*time.Second, "the projector writing a batch past the last checkpoint", func() (bool, string) {
			applied, _ := checkpoint(t, db, "users")
			return applied > last && holdingXID(t, db, "faults_project"), fmt.Sprintf("users applied %d", applied)
		})
		p.kill()
		last, _ = checkpoint(t, db, "users")
		all, user := ledgerCounts(t, db)
		t.Logf("kill %d: users applied %d; ledger %d events (%d user events) so far", kill, last, all, user)
	}
	if err := seed.wait(45 * time.Second); err != nil {
		t.Fatalf("seed: %v\n%s", err, seed.logs.String())
	}
	t.Logf("seeded at %s", time.Since(t0).Round(time.Millisecond))
	startLedger(t, projEnv, "project")
	waitCaughtUp(t, db, 40*time.Second)
	t.Logf("caught up at %s", time.Since(t0).Round(time.Millisecond))
	checkUsers(t, dsn)
}

// TestFaultRebuildKilled SIGKILLs `ledger projections rebuild users` twice
// (while it folds, then past the fold: loading, catching up or swapping)
// while the live projector and a second load run. The live users table
// never shrinks or errors for a reader; the killed rebuild's lock does not
// block the next one, which succeeds; the counters and check are exact.
func TestFaultRebuildKilled(t *testing.T) {
	dsn := schematest.NewURL(t)
	env := map[string]string{"DATABASE_URL": dsn}
	if out, errOut, code := runLedger(t, env, "seed", "--users", "3000", "--events", "30000", "--seed", "6"); code != 0 {
		t.Fatalf("seed: exit %d\n%s%s", code, out, errOut)
	}
	db := schematest.Open(t, dsn)
	startLedger(t, map[string]string{"DATABASE_URL": dsn, "LOG_LEVEL": "warn"}, "project")
	waitCaughtUp(t, db, 40*time.Second)

	// A reader of the live table, all along.
	var live0 int64
	if err := db.QueryRow(`SELECT count(*) FROM users`).Scan(&live0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	type reading struct {
		min, reads int64
		err        error
	}
	readings := make(chan reading, 1)
	go func() {
		r := reading{min: live0}
		defer func() { readings <- r }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int64
			if err := db.QueryRow(`SELECT count(*) FROM users`).Scan(&n); err != nil {
				r.err = err
				return
			}
			r.min = min(r.min, n)
			r.reads++
			time.Sleep(2 * time.Millisecond)
		}
	}()

	// More events arrive meanwhile.
	more := startLedger(t, env, "seed", "--users", "1000", "--events", "10000", "--seed", "7")

	phase := func() string {
		var p string
		err := db.QueryRow(`SELECT phase FROM projection_rebuilds WHERE name = 'users'`).Scan(&p)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			t.Fatal(err)
		}
		return p
	}
	for _, past := range []bool{false, true} {
		rb := startLedger(t, env, "projections", "rebuild", "users")
		var at string
		waitFor(t, 30*time.Second, "the rebuild reaching its phase", func() (bool, string) {
			at = phase()
			if past {
				return at != "" && at != "start" && at != "fold", at
			}
			return at == "fold", at
		})
		rb.kill()
		t.Logf("rebuild killed in phase %s", at)
	}
	if err := more.wait(45 * time.Second); err != nil {
		t.Fatalf("seed: %v\n%s", err, more.logs.String())
	}

	start := time.Now()
	out, errOut, code := runLedger(t, env, "projections", "rebuild", "users")
	if code != 0 || !strings.Contains(out, "rebuilt users:") {
		t.Fatalf("rebuild after the killed ones: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("rebuild after two killed ones: %s in %s", strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
	close(stop)
	r := <-readings
	if r.err != nil {
		t.Fatalf("a reader of the live table failed during the rebuilds: %v", r.err)
	}
	if r.min < live0 {
		t.Fatalf("the live users table shrank to %d rows (from %d) during the rebuilds", r.min, live0)
	}
	t.Logf("%d reads of the live table, never below %d rows", r.reads, live0)
	var leftovers int
	if err := db.QueryRow(`SELECT count(*) FROM pg_tables WHERE tablename LIKE 'users\_%'`).Scan(&leftovers); err != nil {
		t.Fatal(err)
	}
	if leftovers != 0 {
		t.Errorf("%d tables left over by the rebuilds", leftovers)
	}
	waitCaughtUp(t, db, 40*time.Second)
	checkUsers(t, dsn)
}

// TestFaultTwoServicesSameDeliveries runs two services on one database (both
// migrating at start, both running the projectors) and sends every delivery
// to both at once: each is stored once, exactly one of the two answers says
// "stored", and the projectors apply each event once.
func TestFaultTwoServicesSameDeliveries(t *testing.T) {
	dsn := schematest.NewURL(t)
	secret := clerkgen.NewSecret()
	var addrs [2]string
	var serves [2]*child
	var wg sync.WaitGroup
	for i := range addrs {
		wg.Go(func() { serves[i], addrs[i] = startServe(t, dsn, secret) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	db := schematest.Open(t, dsn)
	ds := history(t, 40, 400, 21)
	s := newSender(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	next := make(chan domain.Delivery)
	go func() {
		defer close(next)
		for _, d := range ds {
			next <- d
		}
	}()
	var mu sync.Mutex
	outcomes := map[string][]string{}
	for range 8 {
		wg.Go(func() {
			for d := range next {
				var both sync.WaitGroup
				for _, addr := range addrs {
					both.Go(func() {
						o, err := s.deliver(ctx, addr, d)
						if err != nil {
							t.Error(err)
						}
						mu.Lock()
						outcomes[d.ID] = append(outcomes[d.ID], o)
						mu.Unlock()
					})
				}
				both.Wait()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for id, o := range outcomes {
		stored := 0
		for _, x := range o {
			if x == "stored" {
				stored++
			}
		}
		// Exactly one "stored"; none only when one of this delivery's own
		// attempts failed after committing (then both say duplicate).
		if len(o) != 2 || stored > 1 || (stored == 0 && s.failedAttempts(id) == 0) {
			t.Errorf("delivery %s answered %v, want one stored and one duplicate", id, o)
		}
	}
	if len(outcomes) != len(ds) {
		t.Errorf("%d deliveries answered, want %d", len(outcomes), len(ds))
	}
	t.Logf("%d deliveries to two services: %d attempts, %d not 2xx %v", len(ds), s.attempts.Load(), s.failures.Load(), s.codes)
	// Racing copies of one delivery are no error: at worst a transient 503
	// (+ Retry-After), never a 500 or a 4xx.
	for what, n := range s.notRetryable() {
		t.Errorf("%d answers: %s\n%s\n%s", n, what, serves[0].logs.String(), serves[1].logs.String())
	}
	requireEachOnceAndProjected(t, db, dsn, ds)
}

// requireEachOnceAndProjected fails t unless the ledger holds exactly the
// deliveries ds (each answered 2xx), each once under its id and byte for
// byte, and then the projectors catch up and the users projection passes
// check.
func requireEachOnceAndProjected(t *testing.T, db *sqlx.DB, dsn string, ds []domain.Delivery) {
	t.Helper()
	type row struct {
		body []byte
		n    int
	}
	rows := map[string]*row{}
	// Every stored row, its body opened (sealed bodies).
	schematest.WaitVisible(t, db)
	if _, err := schema.EachEvent(withTestKeys(context.Background()), db, schema.EventFilter{}, func(e domain.Event) error {
		if r := rows[e.DeliveryID]; r != nil {
			r.n++
		} else {
			rows[e.DeliveryID] = &row{body: bytes.Clone(e.Body), n: 1}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sent := map[string]bool{}
	for _, d := range ds {
		sent[d.ID] = true
		switch r := rows[d.ID]; {
		case r == nil:
			t.Errorf("delivery %s was answered 2xx but is not in the ledger", d.ID)
		case r.n > 1:
			t.Errorf("delivery %s is stored %d times", d.ID, r.n)
		case !bytes.Equal(r.body, d.Body):
			t.Errorf("delivery %s is stored with another body", d.ID)
		}
	}
	for id := range rows {
		if !sent[id] {
			t.Errorf("the ledger holds delivery %s, which was never sent", id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	waitCaughtUp(t, db, 30*time.Second)
	checkUsers(t, dsn)
}

// withRedeliveries returns ds followed by extra copies of random ones (Svix
// redelivering, each copy a separate job), shuffled.
func withRedeliveries(ds []domain.Delivery, extra int, seed uint64) []domain.Delivery {
	jobs := append([]domain.Delivery(nil), ds...)
	r := rand.New(rand.NewPCG(seed, seed+1))
	for range extra {
		jobs = append(jobs, ds[r.IntN(len(ds))])
	}
	r.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	return jobs
}

// stream is a paced stream of deliveries sent by 8 Svix-like senders.
type stream struct {
	answered atomic.Int64 // jobs answered 2xx (and checked) so far
	errs     chan error
	wg       sync.WaitGroup
}

// startStream hands jobs to 8 goroutines sharing s, one every 4 ms (~250
// deliveries/s, so the stream lasts seconds and faults land in its middle);
// each delivers its job to addr until it is answered 2xx (or ctx ends), then
// runs check on it, when not nil, and counts it answered. The feed pauses
// while all 8 are retrying, as a sender's queue backs up.
func startStream(ctx context.Context, s *sender, addr string, jobs []domain.Delivery, check func(context.Context, domain.Delivery) error) *stream {
	st := &stream{errs: make(chan error, 2*len(jobs))}
	next := make(chan domain.Delivery)
	go func() {
		defer close(next)
		pace := time.NewTicker(4 * time.Millisecond)
		defer pace.Stop()
		for _, d := range jobs {
			select {
			case <-pace.C:
			case <-ctx.Done():
				return
			}
			select {
			case next <- d:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range 8 {
		st.wg.Go(func() {
			for d := range next {
				if _, err := s.deliver(ctx, addr, d); err != nil {
					st.errs <- err
					continue
				}
				if check != nil {
					if err := check(ctx, d); err != nil {
						st.errs <- err
					}
				}
				st.answered.Add(1)
			}
		})
	}
	return st
}

// wait waits until every job has been answered (or ctx ended) and fails t
// with every error the stream met.
func (st *stream) wait(t *testing.T) {
	t.Helper()
	st.wg.Wait()
	close(st.errs)
	for err := range st.errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// sendAll delivers ds to addr from 8 senders, retrying as Svix does, and
// fails the test unless every one is answered 2xx.
func sendAll(t *testing.T, ctx context.Context, s *sender, addr string, ds []domain.Delivery) {
	t.Helper()
	next := make(chan domain.Delivery)
	go func() {
		defer close(next)
		for _, d := range ds {
			next <- d
		}
	}()
	errs := make(chan error, len(ds))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for d := range next {
				if _, err := s.deliver(ctx, addr, d); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func readStatus(t *testing.T, dsn string) map[string]projections.Status {
	t.Helper()
	out, errOut, code := runLedger(t, map[string]string{"DATABASE_URL": dsn}, "projections", "status", "--json")
	if code != 0 {
		t.Fatalf("projections status --json: exit %d\n%s%s", code, out, errOut)
	}
	var st []projections.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("projections status --json: %v\n%s", err, out)
	}
	m := map[string]projections.Status{}
	for _, s := range st {
		m[s.Name] = s
	}
	return m
}

// TestFaultLongTransactionHoldsGate opens an unrelated transaction that holds
// a transaction id while deliveries arrive: they are still accepted and
// stored, the projection does not advance past the gate while it is open,
// `projections status` shows the stall and the transaction behind it, and
// once it ends the projection catches up and check is clean. The
// transaction is held a few seconds only: the gate is cluster-wide.
func TestFaultLongTransactionHoldsGate(t *testing.T) {
	dsn := schematest.NewURL(t)
	secret := clerkgen.NewSecret()
	_, addr := startServe(t, dsn, secret)
	db := schematest.Open(t, dsn)
	ds := history(t, 30, 300, 31)
	before, during := ds[:100], ds[100:]
	s := newSender(t, secret)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	sendAll(t, ctx, s, addr, before)
	waitCaughtUp(t, db, 30*time.Second)
	applied0, _ := checkpoint(t, db, "users")

	blocker, err := db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	var xidText string
	var pid int
	if err := blocker.QueryRow(`SELECT pg_current_xact_id()::xid::text, pg_backend_pid()`).Scan(&xidText, &pid); err != nil {
		t.Fatal(err)
	}
	opened := time.Now()

	sendAll(t, ctx, s, addr, during)
	var rows int
	if err := db.QueryRow(`SELECT count(*) FROM events`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(ds) {
		t.Fatalf("ledger holds %d rows while the gate is held, want %d", rows, len(ds))
	}
	st := readStatus(t, dsn)["users"]
	if st.Gate.Waiting != int64(len(during)) || st.Gate.BlockedBy == nil {
		t.Fatalf("status while the gate is held: gate %+v, want %d events waiting and the blocking transaction", st.Gate, len(during))
	}
	b := st.Gate.BlockedBy
	if xid := fmt.Sprint(b.XID); xid == xidText && b.PID != pid {
		t.Errorf("status names pid %d for our transaction %s, want pid %d", b.PID, xidText, pid)
	} else if xid != xidText {
		t.Logf("the gate is held by an older transaction elsewhere in the cluster: %+v", *b)
	}
	if st.Applied != applied0 || st.LagEvents != 0 || st.LagSeconds <= 0 {
		t.Errorf("status while the gate is held: applied %d (want %d), lag %d events, %.3fs (want 0 visible, > 0 s)", st.Applied, applied0, st.LagEvents, st.LagSeconds)
	}
	out, _, code := runLedger(t, map[string]string{"DATABASE_URL": dsn}, "projections", "status")
	if code != 0 || !strings.Contains(out, fmt.Sprintf("gate: %d committed events", len(during))) || !strings.Contains(out, "gate: blocked by pid") {
		t.Errorf("text status does not show the stall: exit %d\n%s", code, out)
	}
	// The projector keeps polling (every 100 ms) but cannot move.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if a, _ := checkpoint(t, db, "users"); a != applied0 {
			t.Fatalf("users applied %d events while the gate was held (from %d)", a, applied0)
		}
	}
	if err := blocker.Rollback(); err != nil {
		t.Fatal(err)
	}
	t.Logf("gate held for %s by pid %d (xid %s)", time.Since(opened).Round(time.Millisecond), pid, xidText)

	waitCaughtUp(t, db, 30*time.Second)
	checkUsers(t, dsn)
	if g := readStatus(t, dsn)["users"].Gate; g.Waiting != 0 || g.BlockedBy != nil {
		// Another package's transaction could hold it again; only ours is checked.
		if g.BlockedBy != nil && g.BlockedBy.PID == pid {
			t.Errorf("status still names the ended transaction: %+v", g)
		}
	}
}
