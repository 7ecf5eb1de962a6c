package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	"github.com/jmoiron/sqlx"
	"github.com/spf13/cobra"
)

func (a *app) benchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure ingest and projection speed on this machine",
	}
	cmd.AddCommand(a.benchIngestCmd(), a.benchRebuildCmd(), a.benchSoakCmd(), a.benchFloodCmd(), a.benchRelayCmd())
	cmd.AddCommand(a.benchImportCmd(), a.fakeAPICmd(), a.ceilingServerCmd())
	return cmd
}

type ingestOptions struct {
	concurrency int
	duration    time.Duration
	baseline    bool
	target      string
	secret      string
	database    string
	users       int // 0: every delivery about a new user
	cpuProfile  string
	unsealed    bool
	warmUsers   bool   // with users: one untimed delivery about each first
	ceiling     bool   // also send to a server that verifies and stores nothing
	rounds      int    // pairs of runs of --unsealed, --baseline or --against (1: one pair)
	sideBySide  bool   // with unsealed: both services take their loads at once
	against     string // another ledger build to compare this one with (absolute path)
}

func (a *app) benchIngestCmd() *cobra.Command {
	var o ingestOptions
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Send signed, unique ~1 KB deliveries flat out and report rate and latency",
		Long: `ingest starts 'ledger serve' as a child process on a scratch database
(ledger_bench on the DATABASE_URL server, or the dev default), then sends
signed, unique, realistic (~1 KB) user.updated deliveries from --concurrency
clients for --duration, and prints deliveries/s, p50/p95/p99 latency, the
non-2xx count and the server's peak RSS, and the CPU time per delivery of
each layer (from /proc): the service, PostgreSQL (every process of its
server, when it runs on this machine) and this process (the senders).

--baseline also runs, in the same invocation, plain single-row durable INSERTs
of the same payloads at the same concurrency into a scratch table, and prints
our rate as a ratio of it, with its CPU time per insert. With --rounds N
it runs N pairs of the two, alternating their order (the ledger first, then
the baseline first, ...), each run's service stopped and its database
settled before the next, and prints each pair's ratio and then "ledger/
baseline over N rounds: median ratio X" (not with --url, --ceiling,
--warm-users or --cpuprofile). --url targets a running service instead (with
--webhook-secret or CLERK_WEBHOOK_SIGNING_SECRET; no RSS then).

--unsealed first runs the same load (concurrency, duration, --users,
payloads) against a child service of the same build that stores bodies in
clear (no master key, its own scratch database ledger_bench_unsealed),
printing the same lines prefixed "unsealed", then the sealed run as above,
and after it "sealed/unsealed: cost X, rate Y": the sealed run's total CPU
time per delivery (service + PostgreSQL + senders) and its deliveries/s,
each over the unsealed run's. The unsealed run goes first so that what it
leaves PostgreSQL to do can only weigh on the sealed run; between the two,
the unsealed database is vacuumed and the server checkpointed, so that work
is not counted in the sealed run. Not with --url. --rounds N runs N pairs,
alternating their order (unsealed first, then sealed first, ...), every run's
service stopped and its database settled before the next run, and prints each
pair's ratios and then "sealed/unsealed over N rounds: median cost X": on a
shared machine one pair's ratio moves with the load of others, and the first
run of a session finds the machine colder than the rest.

--side-by-side (with --unsealed) runs the two services at the same time
instead, each on its own scratch database with --concurrency senders of
its own, so that a machine whose speed moves (other tenants, steal time)
moves both alike; each round prints both sides' rates and CPU per delivery
and "side by side, sealed/unsealed: cost X", and --rounds N repeats it and
prints the median. PostgreSQL's CPU is split by database: each side's
backends are its own, the rest of the server's (WAL writer, checkpointer)
is shared in proportion to them; the senders' is split by deliveries. It
needs PostgreSQL on this machine. Not with --url, --warm-users, --baseline,
--ceiling or --cpuprofile.

--ceiling then sends the same load to the service's HTTP surface alone
(handlers.NewServer with its middleware, metrics and the webhook handler's
Svix and envelope checks, in a child process) with a store that keeps
nothing: no database, projector or sealer. Its rate over the baseline's is
the most any ledger behind that surface could reach here, with the senders
on the same cores.

--against BUILD runs the same load against the ledger build at BUILD (made
with go build -o BUILD ./cmd/ledger from another commit), on its own
scratch database (ledger_bench_other), and this build, in --rounds N pairs
alternating their order (this build first, then the other, ...), each run's
service stopped and its database settled before the next. Each pair prints
"this/other: cost X, own Y, rate Z": this build's total CPU per delivery,
its service and PostgreSQL CPU per CPU second of its senders (who do the
same work in both runs, so the machine's speed during each run cancels
out), and its deliveries/s, each over the other build's; then their
medians. Not with --url, --unsealed, --baseline, --ceiling or --side-by-side.`,
		Example: "  ledger bench ingest --concurrency 32 --duration 20s --baseline",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.concurrency < 1 || o.duration <= 0 || o.users < 0 {
				return domain.Errorf(domain.EINVALID, "--concurrency must be >= 1, --duration > 0 and --users >= 0")
			}
			if o.warmUsers && o.users == 0 {
				return domain.Errorf(domain.EINVALID, "--warm-users needs --users N (without it every delivery is about a new user)")
			}
			o.secret = a.setting(cmd, "webhook-secret", "CLERK_WEBHOOK_SIGNING_SECRET")
			o.database = a.setting(cmd, "database-url", "DATABASE_URL")
			return a.benchIngest(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVarP(&o.concurrency, "concurrency", "c", 32, "concurrent senders")
	cmd.Flags().DurationVarP(&o.duration, "duration", "d", 20*time.Second, "how long to send")
	cmd.Flags().BoolVar(&o.baseline, "baseline", false, "also time plain durable INSERTs and print the ratio")
	cmd.Flags().BoolVar(&o.unsealed, "unsealed", false, "first run the same load against a service storing bodies in clear and print the sealed/unsealed ratios")
	cmd.Flags().IntVar(&o.rounds, "rounds", 1, "with --unsealed, --baseline or --against: pairs of runs (unsealed then sealed, the ledger then the baseline, or this build then the other, then the other way round, ...), each pair's ratio printed, then their median")
	cmd.Flags().BoolVar(&o.sideBySide, "side-by-side", false, "with --unsealed: run the unsealed and the sealing service at the same time, each with --concurrency senders, and compare their CPU per delivery within the same window")
	cmd.Flags().BoolVar(&o.warmUsers, "warm-users", false, "with --users: first send, untimed, one delivery about each user and wait for the projectors, so the timed run is about users the ledger knows (their data keys made)")
	cmd.Flags().BoolVar(&o.ceiling, "ceiling", false, "also send the same load to the service's HTTP surface with a store that keeps nothing (no database, no projectors) and print its rate over the baseline's")
	cmd.Flags().IntVar(&o.users, "users", 0, "spread the deliveries over this many users (0: each about a new user, the worst case for sealing: a data key per delivery)")
	cmd.Flags().StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the service to this file (go tool pprof); with --unsealed, the unsealed service's to FILE.unsealed; with --against, the other build's to FILE.other")
	cmd.Flags().StringVar(&o.target, "url", "", "webhook URL of a running service (default: start one)")
	cmd.Flags().StringVar(&o.against, "against", "", "another ledger build (a file made by go build) to compare this one with, in --rounds pairs of alternating runs")
	cmd.Flags().String("webhook-secret", "", "signing secret of the --url service")
	return cmd
}

// benchDatabase returns the URL of a fresh scratch database named name on the
// server of base (or the dev default server).
func benchDatabase(ctx context.Context, base, name string) (string, error) {
	if base == "" {
		base = devDefaultURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", domain.Errorf(domain.EINVALID, "DATABASE_URL is malformed")
	}
	u.Path = "/postgres"
	admin, err := schema.Open(ctx, u.String(), schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return "", err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
		return "", fmt.Errorf("drop %s: %w", name, err)
	}
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		return "", fmt.Errorf("create %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// settleDatabase vacuums and analyzes every table of the scratch database
// dsn, then checkpoints the server, so that the work a run left behind is
// not done (and counted) during the next one.
func settleDatabase(ctx context.Context, dsn string) error {
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM (ANALYZE)`); err != nil {
		return fmt.Errorf("vacuum the scratch database: %w", schema.Classify(err))
	}
	if _, err := db.ExecContext(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("checkpoint after the run: %w", schema.Classify(err))
	}
	return nil
}

// childService is a `ledger serve` child process for benchmarks.
type childService struct {
	cmd    *exec.Cmd
	addr   string
	logs   *os.File
	exited chan struct{} // closed once the process has exited
}

func startChildService(ctx context.Context, dsn, secret string, extraEnv ...string) (*childService, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startChildServiceExe(ctx, exe, dsn, secret, nil, extraEnv...)
}

// startChildServiceExe is startChildService running the ledger binary exe,
// as `serve serveArgs...`.
func startChildServiceExe(ctx context.Context, exe, dsn, secret string, serveArgs []string, extraEnv ...string) (*childService, error) {
	addr, err := freeLocalAddr()
	if err != nil {
		return nil, err
	}
	logs, err := os.CreateTemp("", "ledger-bench-serve-*.log")
	if err != nil {
		return nil, err
	}
	// The service signs checkpoints as a deployment would (a fresh key,
	// unless the environment gives one).
	logKey := os.Getenv("LEDGER_LOG_KEY")
	if logKey == "" {
		if logKey, _, err = translog.GenerateKey("clerk-ledger/bench"); err != nil {
			return nil, err
		}
	}
	masterKey := os.Getenv("LEDGER_MASTER_KEY")
	if masterKey == "" {
		if masterKey, err = userkeys.Generate(); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(exe, append([]string{"serve"}, serveArgs...)...)
	cmd.Env = append(os.Environ(), "LEDGER_MASTER_KEY="+masterKey, "LEDGER_LOG_KEY="+logKey, "DATABASE_URL="+dsn, "CLERK_WEBHOOK_SIGNING_SECRET="+secret, "LEDGER_ADDR="+addr, "LOG_LEVEL=warn",
		"LEDGER_WEBHOOK_RATE_LIMIT=0", "LEDGER_API_RATE_LIMIT=0") // one sender address: measure ingest, not the limiter
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s serve: %w", filepath.Base(exe), err)
	}
	c := &childService{cmd: cmd, addr: addr, logs: logs, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		case <-c.exited:
			deadline = time.Time{} // it stopped: no use waiting
		case <-time.After(50 * time.Millisecond):
		}
	}
	tail := c.logTail(2048)
	c.stop()
	return nil, fmt.Errorf("the child service never became ready; its log ends:\n%s", tail)
}

// logTail returns the last n bytes (at most) of the child's log, which stop
// deletes.
func (c *childService) logTail(n int64) string {
	b, err := os.ReadFile(c.logs.Name())
	if err != nil {
		return "(log unreadable: " + err.Error() + ")"
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return strings.TrimSpace(string(b))
}

// peakRSS returns the child's peak resident set size in bytes (VmHWM).
func (c *childService) peakRSS() int64 { return procStatusBytes(c.cmd.Process.Pid, "VmHWM:") }

func (c *childService) stop() {
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
	c.logs.Close()
	os.Remove(c.logs.Name())
}

// procStatusBytes reads a "kB" field of /proc/PID/status, in bytes.
func procStatusBytes(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func freeLocalAddr() (string, error) {
	ln, err := listenLocal()
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// payloads makes unique, realistic ~1 KB user.updated bodies cheaply: one
// template rendered once, with a per-delivery user id and timestamp spliced in.
type payloads struct {
	parts [][]byte // template split at the user id
}

func newPayloads() *payloads {
	const marker = "user_BENCHMARKUSERIDMARKER00000"
	body, _ := clerkgen.Event("user.updated", clerkgen.User{ID: marker, Email: "grace.hopper@example.com", FirstName: "Grace", LastName: "Hopper", Username: "grace",
		PublicMetadata: map[string]any{"plan": "pro", "team": "compilers"}}, time.Now())
	return &payloads{parts: bytes.Split(body, []byte(marker))}
}

func (p *payloads) body(userID string) []byte {
	return bytes.Join(p.parts, []byte(userID))
}

// postDelivery sends one delivery through d and counts a non-2xx answer in
// non2xx; it returns only transport errors.
func postDelivery(ctx context.Context, d *deliverer, id string, body []byte, non2xx *atomic.Int64) error {
	status, err := d.post(ctx, id, body)
	if err != nil {
		return err
	}
	if status/100 != 2 {
		non2xx.Add(1)
	}
	return nil
}

// latencies collects request latencies from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

func (l *latencies) quantile(q float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[min(len(l.d)-1, int(q*float64(len(l.d))))]
}

// ingestService is the service one run of bench ingest sends to.
type ingestService struct {
	label    string // names the run's lines: "ledger" (sealing), "unsealed" or "other" (--against)
	database string // the scratch database of the child service
	unsealed bool   // the child stores bodies in clear (serve --bench-unsealed)
	exe      string // the child's build ("": this one)
	self     bool   // exe is a copy of this build (--against): its lines are the ledger's
	// ceilingPID, when not 0, is the ceiling server's process (bench
	// ceiling-server): no database, no projectors, nothing stored.
	ceilingPID int
}

// ingestRun is what one run of bench ingest measured.
type ingestRun struct {
	target     string        // the webhook URL sent to
	child      *childService // the service started for the run (nil with --url)
	dsn        string        // its scratch database ("" with --url)
	postmaster int           // its server's PID (0: unknown)
	rate       float64       // deliveries answered per second
	n          int64         // deliveries answered
	cpu        cpuUse
}

// stop stops the run's child service, if it started one.
func (r ingestRun) stop() {
	if r.child != nil {
		r.child.stop()
	}
}

func (a *app) benchIngest(ctx context.Context, o ingestOptions) error {
	if o.unsealed && o.target != "" {
		return domain.Errorf(domain.EINVALID, "--unsealed starts its own service and does not combine with --url")
	}
	if o.rounds < 1 {
		return domain.Errorf(domain.EINVALID, "--rounds must be at least 1")
	}
	if o.against != "" {
		if o.target != "" || o.unsealed || o.baseline || o.ceiling || o.sideBySide {
			return domain.Errorf(domain.EINVALID, "--against starts both builds' services itself and does not combine with --url, --unsealed, --baseline, --ceiling or --side-by-side")
		}
		exe, err := otherExecutable(o.against)
		if err != nil {
			return err
		}
		o.against = exe
		return a.ingestAgainstRounds(ctx, o, newPayloads())
	}
	if o.rounds > 1 && !o.unsealed && !o.baseline {
		return domain.Errorf(domain.EINVALID, "--rounds repeats the pair of runs of --unsealed, --baseline or --against")
	}
	if o.rounds > 1 && o.baseline && !o.unsealed {
		if o.target != "" || o.ceiling || o.warmUsers || o.cpuProfile != "" {
			return domain.Errorf(domain.EINVALID, "--rounds with --baseline does not combine with --url, --ceiling, --warm-users or --cpuprofile")
		}
		return a.ingestBaselineRounds(ctx, o, newPayloads())
	}
	p := newPayloads()
	if o.sideBySide {
		if !o.unsealed || o.warmUsers || o.baseline || o.ceiling || o.cpuProfile != "" {
			return domain.Errorf(domain.EINVALID, "--side-by-side needs --unsealed and does not combine with --warm-users, --baseline, --ceiling or --cpuprofile")
		}
		return a.ingestSideBySide(ctx, o, p)
	}
	// The unsealed run goes first: what a run leaves behind (autovacuum,
	// the checkpoint of its writes) is settled before the next (vacuumed,
	// checkpointed), and what is left of it lands in the sealed run, which
	// can make encryption look dearer, never cheaper. With --rounds the
	// pairs alternate their order (unsealed first, then sealed first, ...),
	// so a machine warming up or slowing down over the rounds weighs on
	// both alike.
	var run ingestRun
	var costs []float64
	for i := range max(1, o.rounds) {
		order := []bool{false} // sealed alone
		if o.unsealed {
			order = []bool{i%2 == 0, i%2 == 1} // unsealed first in odd rounds
		}
		var plain ingestRun
		for _, unsealed := range order {
			svc := ingestService{label: "ledger", database: "ledger_bench"}
			if unsealed {
				svc = ingestService{label: "unsealed", database: "ledger_bench_unsealed", unsealed: true}
			}
			r, err := a.ingestOnce(ctx, o, p, svc)
			if err != nil {
				return err
			}
			if unsealed {
				plain = r
			} else {
				run = r
			}
			if o.unsealed {
				// What the run left PostgreSQL to do (vacuuming its rows,
				// writing its pages) is done now, not during the next run,
				// whose CPU meter counts every process of the server.
				r.stop()
				if err := settleDatabase(ctx, r.dsn); err != nil {
					return err
				}
			}
		}
		switch {
		case !o.unsealed:
		case run.n == 0 || plain.n == 0:
			fmt.Fprintf(a.stdout, "sealed/unsealed: n/a (a run had no delivery answered)\n")
		default:
			cost := run.cpu.perUnit(run.n) / plain.cpu.perUnit(plain.n)
			costs = append(costs, cost)
			fmt.Fprintf(a.stdout, "sealed/unsealed: cost %.2f (CPU per delivery, %s), rate %.2f\n",
				cost, run.cpu.layers(), run.rate/plain.rate)
		}
	}
	if !o.unsealed {
		defer run.stop()
	}
	if o.rounds > 1 && len(costs) > 0 {
		med, lo, hi := medianOf(costs)
		fmt.Fprintf(a.stdout, "sealed/unsealed over %d rounds: median cost %.2f (min %.2f, max %.2f)\n", len(costs), med, lo, hi)
	}
	var base *baselineResult
	if o.baseline {
		var err error
		if base, err = a.ingestBaseline(ctx, o, p, run); err != nil {
			return err
		}
	}
	if o.ceiling {
		if err := a.ingestCeiling(ctx, o, p, run, base); err != nil {
			return err
		}
	}
	return nil
}

// ingestOnce starts the child service of svc (unless --url names one),
// sends o's load to it, and prints the run's lines, labelled with
// svc.label. The caller stops the returned run's service.
func (a *app) ingestOnce(ctx context.Context, o ingestOptions, p *payloads, svc ingestService) (ingestRun, error) {
	run := ingestRun{target: o.target}
	if run.target == "" {
		var err error
		if run, o.secret, err = a.startIngestChild(ctx, o, svc); err != nil {
			return ingestRun{}, err
		}
	}
	if err := a.sendIngest(ctx, o, p, svc, &run); err != nil {
		run.stop()
		return ingestRun{}, err
	}
	return run, nil
}

// startIngestChild makes svc's scratch database and starts its child
// service on it, with a new signing secret, which it returns. The caller
// stops the run's service.
func (a *app) startIngestChild(ctx context.Context, o ingestOptions, svc ingestService) (ingestRun, string, error) {
	var run ingestRun
	var err error
	run.dsn, err = benchDatabase(ctx, o.database, svc.database)
	if err != nil {
		return ingestRun{}, "", err
	}
	secret := clerkgen.NewSecret()
	var env, args []string
	if svc.unsealed {
		// The child gets no master key (serve refuses one with the flag).
		env, args = append(env, "LEDGER_MASTER_KEY="), append(args, "--"+benchUnsealedFlag)
	}
	if o.cpuProfile != "" {
		prof, err := filepath.Abs(o.cpuProfile)
		if err != nil {
			return ingestRun{}, "", err
		}
		switch {
		case svc.unsealed:
			prof += ".unsealed" // the last run of each kind is kept
		case svc.exe != "" && !svc.self:
			prof += ".other"
		}
		env = append(env, "LEDGER_CPUPROFILE="+prof)
	}
	exe := svc.exe
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return ingestRun{}, "", err
		}
	}
	if run.child, err = startChildServiceExe(ctx, exe, run.dsn, secret, args, env...); err != nil {
		return ingestRun{}, "", err
	}
	run.target = "http://" + run.child.addr + "/api/webhooks/clerk"
	return run, secret, nil
}

// sendIngest sends o's load to run's target, prints what it measured and
// sets run's postmaster and measures.
func (a *app) sendIngest(ctx context.Context, o ingestOptions, p *payloads, svc ingestService, run *ingestRun) error {
	target, child := run.target, run.child
	if o.secret == "" {
		return domain.Errorf(domain.EINVALID, "--url needs the service's signing secret: --webhook-secret or CLERK_WEBHOOK_SIGNING_SECRET")
	}
	signer, err := clerkgen.NewSigner(strings.Fields(o.secret)[0])
	if err != nil {
		return domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is malformed")
	}
	client, err := newDeliverer(target, signer, o.concurrency)
	if err != nil {
		return domain.Errorf(domain.EINVALID, "%v", err)
	}
	defer client.close()
	// The sealing run's lines are as they always were; the unsealed run's
	// each start with "unsealed".
	head, cpuHead, pre, note := fmt.Sprintf("%-10s", svc.label+":"), fmt.Sprintf("%-9s", svc.label), "", ""
	switch {
	case svc.unsealed:
		pre, note = head, " (bodies stored in clear, "+svc.database+")"
	case svc.ceilingPID != 0:
		pre, note = head, " (the service's HTTP surface and Svix check, nothing stored)"
	case svc.exe != "" && !svc.self:
		pre, note = head, " (the build "+svc.exe+", "+svc.database+")"
	}
	fmt.Fprintf(a.stdout, "%sbench ingest: %d senders for %s -> %s%s\n", pre, o.concurrency, o.duration, target, note)
	// The child inherits LEDGER_PROJECTORS. The lag is sampled (and
	// warm-up waits for it) only of the child started here and of the
	// users projector and tree sealer when it runs them: counting the
	// ever-growing backlog of one that runs nowhere every 250 ms would load
	// the PostgreSQL being measured.
	running, err := parseProjectors(a.env("LEDGER_PROJECTORS"))
	if err != nil {
		return err
	}
	var sampled []string
	if child != nil {
		sampled = lagProjectorsOf(running)
	}
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	// With --users the deliveries are about user(0) to user(users-1).
	user := func(k int) string { return fmt.Sprintf("user_b%s%011d", runID, k) }
	userOf := func(w, i int) string {
		if o.users > 0 {
			return user((i*o.concurrency + w) % o.users)
		}
		return fmt.Sprintf("user_b%s%04d%07d", runID, w, i)
	}
	if o.warmUsers {
		if err := a.warmUsers(ctx, o, p, client, runID, user, sampled, run.dsn, pre); err != nil {
			return err
		}
	}
	var lag *lagSampler
	if len(sampled) > 0 {
		if lag, err = startLagSampler(ctx, run.dsn, sampled); err != nil {
			return err
		}
	}
	if run.dsn != "" {
		run.postmaster = benchPostmaster(ctx, run.dsn)
	}
	servicePID := svc.ceilingPID
	if child != nil {
		servicePID = child.cmd.Process.Pid
	}
	var non2xx atomic.Int64
	meter := startCPUMeter(servicePID, run.postmaster)
	res := runLoad(ctx, o.concurrency, o.duration, func(w, i int) error {
		id := fmt.Sprintf("msg_%s_%d_%d", runID, w, i)
		return postDelivery(ctx, client, id, p.body(userOf(w, i)), &non2xx)
	})
	run.cpu = meter.stop()
	run.n, run.rate = res.ok, float64(res.ok)/res.elapsed.Seconds()
	fmt.Fprintf(a.stdout, "%s%8.0f deliveries/s  p50 %s  p95 %s  p99 %s  non-2xx %d  errors %d  (%d in %s)\n",
		head, run.rate, ms(res.lat.quantile(0.50)), ms(res.lat.quantile(0.95)), ms(res.lat.quantile(0.99)), non2xx.Load(), res.failed, res.ok, res.elapsed.Round(time.Millisecond))
	fmt.Fprintf(a.stdout, "%s%s\n", cpuHead, run.cpu.line("delivery", res.ok, "service", "senders (this process)"))
	if servicePID != 0 {
		fmt.Fprintf(a.stdout, "%sserver peak RSS: %.1f MB\n", pre, float64(procStatusBytes(servicePID, "VmHWM:"))/1e6)
	}
	switch {
	case child != nil && len(running) == 0:
		fmt.Fprintf(a.stdout, "%sprojectors off in the service (LEDGER_PROJECTORS=off): no lag sampled\n", pre)
	case child != nil && len(sampled) == 0:
		fmt.Fprintf(a.stdout, "%sprojectors in the service: %s (LEDGER_PROJECTORS); no lag sampled\n", pre, strings.Join(running, ", "))
	case child != nil && len(running) < len(projectorNames()):
		fmt.Fprintf(a.stdout, "%sprojectors in the service: %s (LEDGER_PROJECTORS)\n", pre, strings.Join(running, ", "))
	}
	if lag != nil {
		lag.stop()
		caught := lag.catchUp(ctx, 30*time.Second)
		for _, name := range sampled {
			m := lag.max[name]
			fmt.Fprintf(a.stdout, "%s%s projector lag while sending (sampled every 250 ms): max %d events, max %.2f s; caught up %s after the last delivery\n",
				pre, name, m.events, m.seconds, caught[name])
		}
	}
	return nil
}

// warmUsers sends, untimed, one delivery about each of o.users users
// (user(0) to user(o.users-1), the timed run's), then waits for the projectors to catch up when
// it can see them (waitProjectors, on dsn): the timed run is then about
// users the ledger already knows, their data keys made. Any failed
// delivery is an error.
func (a *app) warmUsers(ctx context.Context, o ingestOptions, p *payloads, client *deliverer, runID string, user func(int) string, waitFor []string, dsn, pre string) error {
	start := time.Now()
	var next, failed, non2xx atomic.Int64
	var wg sync.WaitGroup
	for range o.concurrency {
		wg.Go(func() {
			for k := next.Add(1) - 1; k < int64(o.users) && ctx.Err() == nil; k = next.Add(1) - 1 {
				id := fmt.Sprintf("msg_%s_warm_%d", runID, k)
				if err := postDelivery(ctx, client, id, p.body(user(int(k))), &non2xx); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load() + non2xx.Load(); n > 0 || ctx.Err() != nil {
		return fmt.Errorf("warm up %d users: %d deliveries failed: %w", o.users, n, ctx.Err())
	}
	caught := ""
	if len(waitFor) > 0 {
		l, err := startLagSampler(ctx, dsn, waitFor)
		if err != nil {
			return err
		}
		l.stop()
		times := l.catchUp(ctx, 60*time.Second)
		for _, name := range waitFor {
			caught += fmt.Sprintf(", %s projector caught up in %s", name, times[name])
		}
	}
	fmt.Fprintf(a.stdout, "%swarm-up: one delivery about each of %d users in %s (not timed)%s\n", pre, o.users, time.Since(start).Round(time.Millisecond), caught)
	return nil
}

// ingestBaseline runs insertBaseline on the sealing run's scratch database
// (a fresh one with --url) and prints it and our rate as a ratio of it.
func (a *app) ingestBaseline(ctx context.Context, o ingestOptions, p *payloads, run ingestRun) (*baselineResult, error) {
	var err error
	if run.dsn == "" {
		if run.dsn, err = benchDatabase(ctx, o.database, "ledger_bench"); err != nil {
			return nil, err
		}
	}
	if run.postmaster == 0 {
		run.postmaster = benchPostmaster(ctx, run.dsn)
	}
	base, err := insertBaseline(ctx, run.dsn, p, o, run.postmaster)
	if err != nil {
		return nil, err
	}
	a.printBaseline(base)
	fmt.Fprintf(a.stdout, "ratio:    %.2f (ledger / baseline)\n", run.rate/base.rate)
	return &base, nil
}

// ingestBaselineRounds runs o.rounds pairs of the ledger's run and the
// baseline's, alternating their order (the ledger first, then the
// baseline first, ...), each run's service stopped and its database
// settled before the next run, and prints each pair's ratio and then their
// median: on a shared machine the speed moves between two runs more than
// between the two runs of a pair alternated over rounds.
func (a *app) ingestBaselineRounds(ctx context.Context, o ingestOptions, p *payloads) error {
	var ratios []float64
	for i := range o.rounds {
		var run ingestRun
		var base baselineResult
		ledger := func() error {
			r, err := a.ingestOnce(ctx, o, p, ingestService{label: "ledger", database: "ledger_bench"})
			if err != nil {
				return err
			}
			r.stop()
			run = r
			return settleDatabase(ctx, r.dsn)
		}
		baseline := func() error {
			dsn, err := benchDatabase(ctx, o.database, "ledger_bench")
			if err != nil {
				return err
			}
			if base, err = insertBaseline(ctx, dsn, p, o, benchPostmaster(ctx, dsn)); err != nil {
				return err
			}
			a.printBaseline(base)
			return settleDatabase(ctx, dsn)
		}
		first, second, order := ledger, baseline, "the ledger first"
		if i%2 == 1 {
			first, second, order = baseline, ledger, "the baseline first"
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		if base.rate == 0 {
			return errors.New("the baseline made no insert")
		}
		ratios = append(ratios, run.rate/base.rate)
		fmt.Fprintf(a.stdout, "round %d (%s): ratio %.2f (ledger / baseline)\n", i+1, order, run.rate/base.rate)
	}
	med, lo, hi := medianOf(ratios)
	fmt.Fprintf(a.stdout, "ledger/baseline over %d rounds: median ratio %.2f (min %.2f, max %.2f)\n", len(ratios), med, lo, hi)
	return nil
}

// medianOf returns the median, the least and the greatest of xs (not
// empty), which it sorts.
func medianOf(xs []float64) (med, lo, hi float64) {
	slices.Sort(xs)
	med = xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + med) / 2
	}
	return med, xs[0], xs[len(xs)-1]
}

// printBaseline prints the baseline's lines.
func (a *app) printBaseline(base baselineResult) {
	fmt.Fprintf(a.stdout, "baseline: %8.0f inserts/s     p50 %s  p95 %s  p99 %s  (plain single-row durable INSERTs, same payloads and concurrency)\n",
		base.rate, ms(base.p50), ms(base.p95), ms(base.p99))
	fmt.Fprintf(a.stdout, "baseline %s\n", base.cpu.line("insert", base.n, "", "client (this process)"))
}

type baselineResult struct {
	rate          float64
	p50, p95, p99 time.Duration
	n             int64
	cpu           cpuUse
}

// insertBaseline runs single-row autocommit INSERTs of the same bodies at the
// same concurrency for the same duration into a scratch table.
// postmaster (0: unknown) is the PostgreSQL server's PID, for its CPU time.
func insertBaseline(ctx context.Context, dsn string, p *payloads, o ingestOptions, postmaster int) (baselineResult, error) {
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: o.concurrency})
	if err != nil {
		return baselineResult{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DROP TABLE IF EXISTS bench_baseline; CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, delivery_id text NOT NULL, body text NOT NULL)`); err != nil {
		return baselineResult{}, fmt.Errorf("create baseline table: %w", err)
	}
	meter := startCPUMeter(0, postmaster)
	res := runLoad(ctx, o.concurrency, o.duration, func(w, i int) error {
		body := p.body(fmt.Sprintf("user_base%04d%07d", w, i))
		_, err := db.ExecContext(ctx, `INSERT INTO bench_baseline (delivery_id, body) VALUES ($1, $2)`, fmt.Sprintf("msg_%d_%d", w, i), string(body))
		return err
	})
	cpu := meter.stop()
	if res.failed > 0 {
		return baselineResult{}, errors.New("baseline inserts failed: " + strconv.FormatInt(res.failed, 10))
	}
	return baselineResult{rate: float64(res.ok) / res.elapsed.Seconds(), p50: res.lat.quantile(.5), p95: res.lat.quantile(.95), p99: res.lat.quantile(.99),
		n: res.ok, cpu: cpu}, nil
}

// benchPostmaster returns the PID of the PostgreSQL server of dsn when it
// runs on this machine, else 0 (its CPU time is then not measured).
func benchPostmaster(ctx context.Context, dsn string) int {
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return 0
	}
	defer db.Close()
	return postmasterPID(ctx, db)
}

// loadResult is what runLoad measured.
type loadResult struct {
	ok, failed int64
	elapsed    time.Duration
	lat        *latencies
}

// runLoad calls op from `workers` goroutines, each with its own counter i,
// until the duration is over or ctx ends, and times every call that returned
// no error.
func runLoad(ctx context.Context, workers int, d time.Duration, op func(w, i int) error) loadResult {
	var ok, failed atomic.Int64
	lat := &latencies{}
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					failed.Add(1)
					continue
				}
				local = append(local, time.Since(t0))
				ok.Add(1)
			}
			lat.add(local)
		}()
	}
	wg.Wait()
	return loadResult{ok: ok.Load(), failed: failed.Load(), elapsed: time.Since(start), lat: lat}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// lagProjectorsOf returns the projectors of running (names) whose lag bench
// ingest reports: the users projection and the tree sealer, when they run.
func lagProjectorsOf(running []string) []string {
	var out []string
	for _, name := range []string{projections.UsersName, projections.TreeName} {
		if slices.Contains(running, name) {
			out = append(out, name)
		}
	}
	return out
}

// lagSampler polls the status of some projectors during a benchmark and
// keeps the worst lag seen of each.
type lagSampler struct {
	db    *sqlx.DB
	names []string // the projectors sampled
	halt  func()   // stops the sampling goroutine and waits for it
	max   map[string]lagMax
}

type lagMax struct {
	events  int64
	seconds float64
}

func startLagSampler(ctx context.Context, dsn string, names []string) (*lagSampler, error) {
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return nil, err
	}
	l := &lagSampler{db: db, names: names, max: map[string]lagMax{}}
	l.halt = goEvery(ctx, 250*time.Millisecond, 250*time.Millisecond, func(ctx context.Context) {
		for name, s := range l.status(ctx) {
			m := l.max[name]
			l.max[name] = lagMax{max(m.events, s.LagEvents), max(m.seconds, s.LagSeconds)}
		}
	})
	return l, nil
}

// status reads the status of l's projectors (none on an error).
func (l *lagSampler) status(ctx context.Context) map[string]projections.Status {
	st, err := projections.ReadStatus(ctx, l.db, l.names...)
	if err != nil {
		return nil
	}
	out := map[string]projections.Status{}
	for _, s := range st {
		if slices.Contains(l.names, s.Name) {
			out[s.Name] = s
		}
	}
	return out
}

// stop ends the sampling; the database stays open for catchUp.
func (l *lagSampler) stop() {
	l.halt()
}

// catchUp waits until each of l's projectors has no lag and says how long
// that took for each, then closes the sampler's database.
func (l *lagSampler) catchUp(ctx context.Context, limit time.Duration) map[string]string {
	defer l.db.Close()
	start := time.Now()
	out := map[string]string{}
	for time.Since(start) < limit && len(out) < len(l.names) {
		for name, s := range l.status(ctx) {
			if _, done := out[name]; !done && s.LagEvents == 0 {
				out[name] = time.Since(start).Round(time.Millisecond).String()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range l.names {
		if _, done := out[name]; !done {
			out[name] = "not within " + limit.String()
		}
	}
	return out
}
