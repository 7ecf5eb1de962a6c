package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// This file holds bench ingest --unsealed --side-by-side: the sealing and
// the unsealed service take their loads at the same time, so that whatever
// else the machine runs (other tenants of a shared host, its steal time)
// weighs on both alike, and their CPU per delivery is compared within one
// window instead of two.

// sideRun is what one side of a side-by-side round measured.
type sideRun struct {
	svc     ingestService
	run     ingestRun
	secret  string
	res     loadResult
	non2xx  atomic.Int64
	service time.Duration // the child's CPU time
	own     time.Duration // its database's PostgreSQL backends' CPU time
}

// ingestSideBySide runs o.rounds rounds of an unsealed and a sealing child
// service taking o's load at once (o.concurrency senders each, on their
// own scratch databases), and prints each side's rate, latency and CPU
// per delivery, the round's sealed/unsealed cost and, over the rounds, its
// median. PostgreSQL's CPU is split by database: each side's backends
// (read from pg_stat_activity and /proc every 100 ms, so a backend that
// ends during the round keeps its last reading) are its own; the rest of
// the server's (WAL writer, checkpointer, background writer, the sampler's
// own backend) is shared, given to each side in proportion to its
// backends' CPU; this process's (the senders') is given in proportion to
// deliveries.
func (a *app) ingestSideBySide(ctx context.Context, o ingestOptions, p *payloads) error {
	var costs []float64
	for round := range o.rounds {
		cost, err := a.sideBySideRound(ctx, o, p, round)
		if err != nil {
			return err
		}
		if cost > 0 {
			costs = append(costs, cost)
		}
	}
	if len(costs) > 1 {
		slices.Sort(costs)
		med := costs[len(costs)/2]
		if len(costs)%2 == 0 {
			med = (costs[len(costs)/2-1] + med) / 2
		}
		fmt.Fprintf(a.stdout, "side by side, sealed/unsealed over %d rounds: median cost %.2f (min %.2f, max %.2f)\n", len(costs), med, costs[0], costs[len(costs)-1])
	}
	return nil
}

// sideBySideRound is one round of ingestSideBySide; it returns its
// sealed/unsealed cost (0 when a side answered nothing).
func (a *app) sideBySideRound(ctx context.Context, o ingestOptions, p *payloads, round int) (float64, error) {
	sides := []*sideRun{
		{svc: ingestService{label: "unsealed", database: "ledger_bench_unsealed", unsealed: true}},
		{svc: ingestService{label: "ledger", database: "ledger_bench"}},
	}
	defer func() {
		for _, s := range sides {
			s.run.stop()
		}
	}()
	for _, s := range sides {
		var err error
		if s.run, s.secret, err = a.startIngestChild(ctx, o, s.svc); err != nil {
			return 0, err
		}
	}
	postmaster := benchPostmaster(ctx, sides[0].run.dsn)
	if postmaster == 0 {
		return 0, domain.Errorf(domain.EINVALID, "--side-by-side needs PostgreSQL on this machine (its processes' CPU is read from /proc)")
	}
	admin, err := schema.Open(ctx, sides[0].run.dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return 0, err
	}
	defer admin.Close()
	dbs := []string{sides[0].svc.database, sides[1].svc.database}
	sampler, err := startBackendSampler(ctx, admin, dbs)
	if err != nil {
		return 0, err
	}
	pgStart, selfStart := postgresCPU(postmaster), cpuOf(os.Getpid())
	svcStart := []time.Duration{cpuOf(sides[0].run.child.cmd.Process.Pid), cpuOf(sides[1].run.child.cmd.Process.Pid)}
	var wg sync.WaitGroup
	for i, s := range sides {
		signer, err := clerkgen.NewSigner(s.secret)
		if err != nil {
			return 0, err
		}
		client, err := newDeliverer(s.run.target, signer, o.concurrency)
		if err != nil {
			return 0, err
		}
		defer client.close()
		runID := strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.Itoa(i)
		userOf := func(w, n int) string {
			if o.users > 0 {
				return fmt.Sprintf("user_b%s%011d", runID, (n*o.concurrency+w)%o.users)
			}
			return fmt.Sprintf("user_b%s%04d%07d", runID, w, n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.res = runLoad(ctx, o.concurrency, o.duration, func(w, n int) error {
				id := fmt.Sprintf("msg_%s_%d_%d", runID, w, n)
				return postDelivery(ctx, client, id, p.body(userOf(w, n)), &s.non2xx)
			})
		}()
	}
	wg.Wait()
	own := sampler.stop(ctx)
	pg, self := postgresCPU(postmaster)-pgStart, cpuOf(os.Getpid())-selfStart
	var ownAll time.Duration
	var delivered int64
	for i, s := range sides {
		s.service = cpuOf(s.run.child.cmd.Process.Pid) - svcStart[i]
		s.own = own[s.svc.database]
		ownAll += s.own
		delivered += s.res.ok
	}
	shared := max(0, pg-ownAll)
	fmt.Fprintf(a.stdout, "side by side, round %d: %d senders to each service for %s; PostgreSQL %.2f s of CPU, %.2f s of it shared (not a side's backends)\n",
		round+1, o.concurrency, o.duration, pg.Seconds(), shared.Seconds())
	per := make([]float64, len(sides))
	for i, s := range sides {
		n := s.res.ok
		if n == 0 || delivered == 0 || ownAll == 0 {
			fmt.Fprintf(a.stdout, "%-10s no delivery answered\n", s.svc.label+":")
			return 0, nil
		}
		sharedPart := time.Duration(float64(shared) * float64(s.own) / float64(ownAll))
		senders := time.Duration(float64(self) * float64(n) / float64(delivered))
		us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		per[i] = us(s.service) + us(s.own) + us(sharedPart) + us(senders)
		fmt.Fprintf(a.stdout, "%-10s%8.0f deliveries/s  p50 %s  p99 %s  non-2xx %d  errors %d  cpu per delivery: service %.0f µs  postgres %.0f µs + shared %.0f µs  senders %.0f µs  = %.0f µs  server peak RSS %.1f MB\n",
			s.svc.label+":", float64(n)/s.res.elapsed.Seconds(), ms(s.res.lat.quantile(0.50)), ms(s.res.lat.quantile(0.99)), s.non2xx.Load(), s.res.failed,
			us(s.service), us(s.own), us(sharedPart), us(senders), per[i], float64(s.run.child.peakRSS())/1e6)
	}
	cost := per[1] / per[0]
	core := func(s *sideRun) float64 { return float64((s.service + s.own).Microseconds()) / float64(s.res.ok) }
	fmt.Fprintf(a.stdout, "side by side, sealed/unsealed: cost %.2f (CPU per delivery, service+postgres+senders), %.2f (service and its own backends alone)\n",
		cost, core(sides[1])/core(sides[0]))
	for _, s := range sides {
		s.run.stop()
		if err := settleDatabase(ctx, s.run.dsn); err != nil {
			return 0, err
		}
	}
	return cost, nil
}

// backendSampler follows the CPU time of the PostgreSQL backends of some
// databases: every 100 ms it lists them (pg_stat_activity) and reads each
// one's /proc entry, keeping per backend its first and last reading. A
// backend already there at the start counts from then; one that starts
// later counts from zero; one that ends keeps its last reading (up to
// 100 ms of its work is lost).
type backendSampler struct {
	db       *sqlx.DB
	dbs      []string
	mu       sync.Mutex
	backends map[int]*backendTimes
	done     chan struct{}
	stopped  chan struct{}
	first    bool
}

type backendTimes struct {
	database    string
	first, last time.Duration
}

func startBackendSampler(ctx context.Context, db *sqlx.DB, dbs []string) (*backendSampler, error) {
	s := &backendSampler{db: db, dbs: dbs, backends: map[int]*backendTimes{}, done: make(chan struct{}), stopped: make(chan struct{}), first: true}
	if err := s.sample(ctx); err != nil {
		return nil, err
	}
	s.first = false
	go func() {
		defer close(s.stopped)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				return
			case <-t.C:
				s.sample(ctx) // a failed reading is retried at the next tick
			}
		}
	}()
	return s, nil
}

// sample reads the backends of s.dbs once.
func (s *backendSampler) sample(ctx context.Context) error {
	var rows []struct {
		PID      int    `db:"pid"`
		Database string `db:"datname"`
	}
	if err := s.db.SelectContext(ctx, &rows, `SELECT pid, datname FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()`, pq.Array(s.dbs)); err != nil {
		return fmt.Errorf("list the benchmark's backends: %w", schema.Classify(err))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rows {
		t, _, _, ok := readProcTimes(r.PID)
		if !ok {
			continue
		}
		b := s.backends[r.PID]
		if b == nil {
			b = &backendTimes{database: r.Database}
			if s.first {
				b.first = t.self
			}
			s.backends[r.PID] = b
		}
		b.last = t.self
	}
	return nil
}

// stop takes a last reading and returns each database's backends' CPU
// time since the sampler started.
func (s *backendSampler) stop(ctx context.Context) map[string]time.Duration {
	close(s.done)
	<-s.stopped
	s.sample(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]time.Duration{}
	for _, b := range s.backends {
		out[b.database] += b.last - b.first
	}
	return out
}
