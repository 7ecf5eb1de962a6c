package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// otherDatabase is the scratch database of the --against build's runs.
const otherDatabase = "ledger_bench_other"

// otherExecutable returns the absolute path of the --against build, or an
// EINVALID error naming what is wrong with path: missing, a directory, or
// not executable.
func otherExecutable(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", domain.Errorf(domain.EINVALID, "--against %s: %v", path, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case err != nil:
		return "", domain.Errorf(domain.EINVALID, "--against %s: no such build (make it with go build -o FILE ./cmd/ledger)", path)
	case fi.IsDir():
		return "", domain.Errorf(domain.EINVALID, "--against %s is a directory, not a ledger build", path)
	case fi.Mode().Perm()&0o111 == 0:
		return "", domain.Errorf(domain.EINVALID, "--against %s is not executable", path)
	}
	return abs, nil
}

// otherPair is what one round of --against measured: this build's run
// over the other build's.
type otherPair struct {
	cost float64 // total CPU per delivery (service + PostgreSQL + senders)
	own  float64 // (service + PostgreSQL) per senders' CPU time
	rate float64 // deliveries per second
}

// compareRuns returns this build's run over the other's, or false when a
// run answered no delivery or its senders took no CPU time.
func compareRuns(this, other ingestRun) (otherPair, bool) {
	ownOf := func(r ingestRun) float64 {
		if r.cpu.self <= 0 {
			return 0
		}
		return float64(r.cpu.service+r.cpu.postgres) / float64(r.cpu.self)
	}
	if this.n == 0 || other.n == 0 || other.rate == 0 || ownOf(other) == 0 || ownOf(this) == 0 {
		return otherPair{}, false
	}
	return otherPair{
		cost: this.cpu.perUnit(this.n) / other.cpu.perUnit(other.n),
		own:  ownOf(this) / ownOf(other),
		rate: this.rate / other.rate,
	}, true
}

// ingestAgainstRounds runs o.rounds pairs of runs of this build and of the
// build at o.against, alternating their order (this build first, then the
// other first, ...), each on its own scratch database, each run's service
// stopped and its database settled before the next, and prints each pair's
// ratios and then their medians. The "own" ratio divides each run's
// service and PostgreSQL CPU by its senders' before comparing: the senders
// do the same work in both runs, so how much CPU they took measures how fast
// the machine was during that run.
//
// This build's service runs from a copy of this executable, not from the
// file this process runs: a service sharing its executable file with the
// senders measured 1-9% more CPU over the senders' than the same build
// from another file (12 of 12 rounds of one build against a copy of
// itself), and no more (0.96-1.04 in 4 rounds) when the other build was
// this very file under another name (a hard link).
func (a *app) ingestAgainstRounds(ctx context.Context, o ingestOptions, p *payloads) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ledger-bench-against-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	this := filepath.Join(dir, "ledger")
	if err := copyExecutable(self, this); err != nil {
		return fmt.Errorf("copy this build for its runs: %w", err)
	}
	services := [2]ingestService{
		{label: "ledger", database: "ledger_bench", exe: this, self: true},
		{label: "other", database: otherDatabase, exe: o.against},
	}
	var costs, owns, rates []float64
	for i := range o.rounds {
		var runs [2]ingestRun
		order, first := []int{0, 1}, "this build first"
		if i%2 == 1 {
			order, first = []int{1, 0}, "the other build first"
		}
		for _, k := range order {
			r, err := a.ingestOnce(ctx, o, p, services[k])
			if err != nil {
				return err
			}
			r.stop()
			runs[k] = r
			if err := settleDatabase(ctx, r.dsn); err != nil {
				return err
			}
		}
		pair, ok := compareRuns(runs[0], runs[1])
		if !ok {
			return errors.New("a run answered no delivery, or its CPU could not be read: nothing to compare")
		}
		costs, owns, rates = append(costs, pair.cost), append(owns, pair.own), append(rates, pair.rate)
		fmt.Fprintf(a.stdout, "round %d (%s): this/other: cost %.2f (CPU per delivery, %s), own %.2f (service+postgres per senders' CPU), rate %.2f\n",
			i+1, first, pair.cost, runs[0].cpu.layers(), pair.own, pair.rate)
	}
	cost, costLo, costHi := medianOf(costs)
	own, ownLo, ownHi := medianOf(owns)
	rate, rateLo, rateHi := medianOf(rates)
	fmt.Fprintf(a.stdout, "this/other over %d rounds: median cost %.2f (min %.2f, max %.2f), own %.2f (min %.2f, max %.2f), rate %.2f (min %.2f, max %.2f)\n",
		len(costs), cost, costLo, costHi, own, ownLo, ownHi, rate, rateLo, rateHi)
	return nil
}

// copyExecutable copies the executable file from to a new file to, mode
// 0755.
func copyExecutable(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}
