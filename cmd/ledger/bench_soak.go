package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/spf13/cobra"
)

type soakOptions struct {
	duration    time.Duration
	interval    time.Duration
	rate        float64
	fraction    float64
	concurrency int
	database    string
	dbName      string
}

func (a *app) benchSoakCmd() *cobra.Command {
	var o soakOptions
	cmd := &cobra.Command{
		Use:   "soak",
		Short: "Run a steady delivery load for a long time and report RSS, goroutines, errors and lag",
		Long: `soak starts 'ledger serve' (projectors in-process) as a child process on a
scratch database (--db-name on the DATABASE_URL server, or the dev default),
then sends signed, unique ~1 KB deliveries at a steady rate for --duration.
The rate is --rate deliveries/s or, when --rate is 0, --fraction of the maximum
rate measured by a 5 s flat-out probe first.

Every --interval it prints the server's RSS and goroutine count, deliveries
sent, non-2xx answers and transport errors, and the users projector's lag (in
events and seconds). At the end it compares RSS and goroutines of the last
third of the samples with the first third (after warm-up) and says whether they
stayed flat; it exits 1 when a delivery failed or the server grew.`,
		Example: "  ledger bench soak --duration 10m",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.duration <= 0 || o.interval <= 0 || o.concurrency < 1 || o.rate < 0 || o.fraction <= 0 || o.fraction > 1 {
				return domain.Errorf(domain.EINVALID, "--duration and --interval must be > 0, --concurrency >= 1, --rate >= 0, 0 < --fraction <= 1")
			}
			if !validDBName(o.dbName) {
				return domain.Errorf(domain.EINVALID, "--db-name %q: use lower-case letters, digits and _", o.dbName)
			}
			o.database = a.setting(cmd, "database-url", "DATABASE_URL")
			return a.benchSoak(cmd.Context(), o)
		},
	}
	cmd.Flags().DurationVarP(&o.duration, "duration", "d", 10*time.Minute, "how long to send")
	cmd.Flags().DurationVar(&o.interval, "interval", 30*time.Second, "time between samples")
	cmd.Flags().Float64Var(&o.rate, "rate", 0, "deliveries/s (0: --fraction of the probed maximum)")
	cmd.Flags().Float64Var(&o.fraction, "fraction", 0.5, "fraction of the probed maximum rate to send at")
	cmd.Flags().IntVarP(&o.concurrency, "concurrency", "c", 32, "concurrent senders")
	cmd.Flags().StringVar(&o.dbName, "db-name", "ledger_soak", "scratch database to create (dropped first) on the DATABASE_URL server")
	return cmd
}

// soakSample is one line of the soak report.
type soakSample struct {
	at         time.Duration
	sent       int64
	non2xx     int64
	errors     int64
	rss        int64
	goroutines int64
	lagEvents  int64
	lagSeconds float64
}

func (a *app) benchSoak(ctx context.Context, o soakOptions) error {
	dsn, err := benchDatabase(ctx, o.database, o.dbName)
	if err != nil {
		return err
	}
	secret := clerkgen.NewSecret()
	child, err := startChildService(ctx, dsn, secret)
	if err != nil {
		return err
	}
	defer child.stop()
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		return err
	}
	target := "http://" + child.addr + "/api/webhooks/clerk"
	client, err := newDeliverer(target, signer, o.concurrency)
	if err != nil {
		return err
	}
	defer client.close()
	p := newPayloads()
	runID := strconv.FormatInt(time.Now().UnixNano(), 36)
	var non2xx atomic.Int64
	send := func(tag string, w, i int) error {
		id := fmt.Sprintf("msg_%s%s_%d_%d", runID, tag, w, i)
		return postDelivery(ctx, client, id, p.body(fmt.Sprintf("user_s%s%s%04d%07d", runID, tag, w, i%5000)), &non2xx)
	}

	rate := o.rate
	if rate == 0 {
		probe := runLoad(ctx, o.concurrency, 5*time.Second, func(w, i int) error { return send("p", w, i) })
		max := float64(probe.ok) / probe.elapsed.Seconds()
		if probe.ok == 0 || non2xx.Load() > 0 {
			return domain.Errorf(domain.EUNAVAILABLE, "the probe failed: %d answered, %d not 2xx, %d transport errors (log: %s)", probe.ok, non2xx.Load(), probe.failed, child.logs.Name())
		}
		rate = max * o.fraction
		fmt.Fprintf(a.stdout, "probe: %.0f deliveries/s flat out; soaking at %.0f/s (%.0f%%)\n", max, rate, o.fraction*100)
	}
	fmt.Fprintf(a.stdout, "soak: %.0f deliveries/s for %s, %d senders, sample every %s -> %s\n", rate, o.duration, o.concurrency, o.interval, target)
	fmt.Fprintf(a.stdout, "%8s %10s %7s %7s %9s %10s %10s %8s\n", "t", "sent", "non2xx", "errors", "rss_mb", "goroutines", "lag_events", "lag_s")

	var sent, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(o.duration)
	loadCtx, stopLoad := context.WithDeadline(ctx, deadline)
	defer stopLoad()
	var wg sync.WaitGroup
	step := time.Duration(float64(o.concurrency) / rate * float64(time.Second))
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(float64(w) / rate * float64(time.Second)))
			for i := 0; ; i++ {
				if d := time.Until(next); d > 0 {
					select {
					case <-loadCtx.Done():
						return
					case <-time.After(d):
					}
				}
				if loadCtx.Err() != nil {
					return
				}
				if err := send("s", w, i); err != nil && loadCtx.Err() == nil {
					failed.Add(1)
				}
				sent.Add(1)
				next = next.Add(step)
			}
		}()
	}

	var samples []soakSample
	sample := func() {
		s := soakSample{at: time.Since(start).Round(time.Second), sent: sent.Load(), non2xx: non2xx.Load(), errors: failed.Load(),
			rss: procStatusBytes(child.cmd.Process.Pid, "VmRSS:"), goroutines: scrapeGauge(ctx, "http://"+child.addr+"/metrics", "go_goroutines")}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if st, err := projections.ReadStatus(sctx, db, projections.UsersName); err == nil {
			for _, x := range st {
				if x.Name == projections.UsersName {
					s.lagEvents, s.lagSeconds = x.LagEvents, x.LagSeconds
				}
			}
		}
		cancel()
		samples = append(samples, s)
		gr := "n/a"
		if s.goroutines >= 0 {
			gr = strconv.FormatInt(s.goroutines, 10)
		}
		fmt.Fprintf(a.stdout, "%8s %10d %7d %7d %9.1f %10s %10d %8.2f\n", s.at, s.sent, s.non2xx, s.errors, float64(s.rss)/1e6, gr, s.lagEvents, s.lagSeconds)
	}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-loadCtx.Done():
			break loop
		case <-tick.C:
			sample()
		}
	}
	wg.Wait()
	sample()
	elapsed := time.Since(start)
	fmt.Fprintf(a.stdout, "sent %d in %s (%.0f/s), non-2xx %d, errors %d\n", sent.Load(), elapsed.Round(time.Second), float64(sent.Load())/elapsed.Seconds(), non2xx.Load(), failed.Load())
	verdict := soakVerdict(samples)
	fmt.Fprintln(a.stdout, verdict.String())
	if non2xx.Load() > 0 || failed.Load() > 0 || !verdict.flat {
		return domain.Errorf(domain.EINTERNAL, "soak failed: %d non-2xx, %d errors, flat=%t", non2xx.Load(), failed.Load(), verdict.flat)
	}
	return nil
}

// soakResult compares the first and last thirds of a soak's samples.
type soakResult struct {
	rssFirst, rssLast float64 // MB, mean
	grFirst, grLast   float64
	maxLagSeconds     float64
	flat              bool
	unmeasured        bool // a sample lacks RSS or goroutines
}

func (r soakResult) String() string {
	if r.unmeasured {
		return "RSS or goroutines could not be read in some samples (/proc or /metrics of the child): NOT MEASURED"
	}
	return fmt.Sprintf("RSS %.1f MB -> %.1f MB (%+.0f%%), goroutines %.0f -> %.0f, max lag %.2f s: %s",
		r.rssFirst, r.rssLast, pct(r.rssFirst, r.rssLast), r.grFirst, r.grLast, r.maxLagSeconds, map[bool]string{true: "flat", false: "GROWING"}[r.flat])
}

func pct(a, b float64) float64 {
	if a == 0 {
		return 0
	}
	return (b - a) / a * 100
}

// soakVerdict calls a soak flat when the mean RSS of the last third of the
// samples is within 25% (or 10 MB) of the first third's and the goroutine
// count within 20% (or 10). The first sample is warm-up and not counted.
func soakVerdict(s []soakSample) soakResult {
	var r soakResult
	for _, x := range s {
		r.maxLagSeconds = max(r.maxLagSeconds, x.lagSeconds)
	}
	if len(s) > 3 {
		s = s[1:]
	}
	n := max(1, len(s)/3)
	mean := func(xs []soakSample, f func(soakSample) float64) float64 {
		var t float64
		for _, x := range xs {
			t += f(x)
		}
		return t / float64(len(xs))
	}
	rss := func(x soakSample) float64 { return float64(x.rss) / 1e6 }
	gr := func(x soakSample) float64 { return float64(x.goroutines) }
	r.rssFirst, r.rssLast = mean(s[:n], rss), mean(s[len(s)-n:], rss)
	r.grFirst, r.grLast = mean(s[:n], gr), mean(s[len(s)-n:], gr)
	r.flat = r.rssLast <= max(r.rssFirst*1.25, r.rssFirst+10) && r.grLast <= max(r.grFirst*1.2, r.grFirst+10)
	for _, x := range s {
		if x.goroutines < 0 || x.rss <= 0 {
			r.flat, r.unmeasured = false, true // cannot call it flat without the numbers
		}
	}
	return r
}

// scrapeGauge reads one unlabelled sample of name from a Prometheus text
// endpoint; -1 when it cannot.
func scrapeGauge(ctx context.Context, url, name string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int64(f)
			}
		}
	}
	return -1
}

// validDBName reports whether s is a plain lower-case identifier, safe to
// splice into CREATE/DROP DATABASE.
func validDBName(s string) bool {
	if s == "" || len(s) > 63 || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
