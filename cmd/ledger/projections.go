package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/jmoiron/sqlx"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func (a *app) projectionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projections",
		Short: "Inspect, check and rebuild the projections (read models)",
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Per projector: checkpoint, ledger head, lag, events applied, last error, rebuild running; events held behind the xid8 gate and the transaction holding it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := a.openDB(cmd)
			if err != nil {
				return err
			}
			defer db.Close()
			st, err := projections.ReadStatus(cmd.Context(), db, projectorNames()...)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return printStatus(a.stdout, st)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	rebuild := &cobra.Command{
		Use:   "rebuild NAME",
		Short: "Rebuild a projection from the first event while the service runs, then swap it in",
		Long: `rebuild builds the projection NAME (users, organizations) from the first event into a table
aside while ingest and the live projector keep running, catches up with what
arrived meanwhile, then swaps the tables and the checkpoint in one transaction:
readers never see an empty or half-built table. Ctrl-C before the swap leaves
the live table untouched. A second rebuild of the same projection at the same
time is refused. The tree sealer cannot be rebuilt.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res projections.RebuildResult
			p, err := a.projectorPass(cmd, args[0], "rebuild", func(db *sqlx.DB, p projections.Projector, prog projections.Progress) (err error) {
				res, err = projections.Rebuild(cmd.Context(), db, p, prog)
				return err
			})
			if err != nil {
				if cmd.Context().Err() != nil || errors.Is(err, context.Canceled) {
					return fmt.Errorf("rebuild of %s interrupted: the live table and checkpoint are untouched", args[0])
				}
				return err
			}
			fmt.Fprintf(a.stdout, "rebuilt %s: %d %s from %d events (%d poison) in %s (%.0f events/s); live from %s\n",
				p.Name(), res.Users, p.Name(), res.Events, res.Failures, res.Duration.Round(time.Millisecond),
				float64(res.Events)/res.Duration.Seconds(), res.Checkpoint)
			return nil
		},
	}

	var checkJSON bool
	check := &cobra.Command{
		Use:   "check NAME",
		Short: "Build a projection from the events aside and compare it with the live table",
		Long: `check folds the events up to the live checkpoint of NAME (users, organizations) aside and
compares the result with the live table, column by column, in one snapshot
(exact while ingest and the projector run). It prints the differences (values
of personal columns are not shown) and exits 1 when there is any. It changes
nothing.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res projections.CheckResult
			p, err := a.projectorPass(cmd, args[0], "check", func(db *sqlx.DB, p projections.Projector, prog projections.Progress) (err error) {
				res, err = projections.Check(cmd.Context(), db, p, prog)
				return err
			})
			if err != nil {
				return err
			}
			if checkJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printCheck(a.stdout, p.Name(), res)
			}
			if len(res.Differences) > 0 {
				return exitCode(1)
			}
			return nil
		},
	}
	check.Flags().BoolVar(&checkJSON, "json", false, "print JSON")
	cmd.AddCommand(status, rebuild, check)
	return cmd
}

func projectorNames() []string {
	var names []string
	for _, p := range projections.Default() {
		names = append(names, p.Name())
	}
	return names
}

// openProjector returns the projector NAME and a pool on the database.
func (a *app) openProjector(cmd *cobra.Command, name string) (projections.Projector, *sqlx.DB, error) {
	p, err := projectorNamed(name)
	if err != nil {
		return nil, nil, err
	}
	db, err := a.openDB(cmd)
	if err != nil {
		return nil, nil, err
	}
	return p, db, nil
}

func projectorNamed(name string) (projections.Projector, error) {
	for _, p := range projections.Default() {
		if p.Name() == name {
			return p, nil
		}
	}
	return nil, domain.Errorf(domain.EINVALID, "unknown projection %q (known: %s)", name, strings.Join(projectorNames(), ", "))
}

// openDB opens DATABASE_URL and checks that its migrations are current.
func (a *app) openDB(cmd *cobra.Command) (*sqlx.DB, error) {
	dsn, err := a.requireDatabaseURL(cmd)
	if err != nil {
		return nil, err
	}
	db, err := schema.Open(cmd.Context(), dsn, schema.PoolOptions{MaxOpen: 4})
	if err != nil {
		return nil, err
	}
	ok, err := schema.MigrationsCurrent(cmd.Context(), db.DB)
	if err == nil && !ok {
		err = domain.Errorf(domain.EUNAVAILABLE, "database migrations are not current (run ledger migrate)")
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func printStatus(w io.Writer, st []projections.Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTOR\tCHECKPOINT\tHEAD\tLAG EVENTS\tLAG\tAPPLIED\tFAILED\tLAST ERROR\tREBUILD")
	for _, s := range st {
		cp := fmt.Sprint(s.Checkpoint.Position)
		if !s.Started {
			cp = "not started"
		}
		lastErr := "-"
		switch {
		case s.LastFailure != nil && (s.LastError == "" || s.LastFailure.FailedAt.After(s.LastErrorAt)):
			lastErr = fmt.Sprintf("%s poison event %d: %s", ago(s.LastFailure.FailedAt), s.LastFailure.Position, s.LastFailure.Error)
		case s.LastError != "":
			lastErr = fmt.Sprintf("%s %s", ago(s.LastErrorAt), s.LastError)
		}
		rebuild := "-"
		if r := s.Rebuild; r != nil {
			rebuild = fmt.Sprintf("running: %s %d/%d (pid %d on %s, %s)", r.Phase, r.Done, r.Total, r.PID, r.Host, ago(r.StartedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1fs\t%d\t%d\t%s\t%s\n", s.Name, cp, s.Head.Position, s.LagEvents, s.LagSeconds,
			s.Applied, s.Failed, truncate(lastErr, 100), rebuild)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st) > 0 && st[0].Gate.Waiting > 0 {
		g := st[0].Gate
		fmt.Fprintf(w, "gate: %d committed events (oldest received %s) wait behind an open transaction; no projector reads past it until it ends\n",
			g.Waiting, ago(g.OldestWaiting))
		if b := g.BlockedBy; b != nil {
			fmt.Fprintf(w, "gate: blocked by pid %d on database %s (application %q, %s, xid %d, open %.1fs)\n",
				b.PID, b.Database, b.ApplicationName, b.State, b.XID, b.AgeSeconds)
		}
	}
	return nil
}

func ago(t time.Time) string { return time.Since(t).Round(time.Second).String() + " ago" }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func printCheck(w io.Writer, name string, res projections.CheckResult) {
	fmt.Fprintf(w, "%s: rebuilt %d %s from %d events up to the live checkpoint %s\n", name, res.Users, name, res.Events, res.Checkpoint)
	if len(res.Differences) == 0 {
		fmt.Fprintln(w, "no differences")
		return
	}
	const show = 50
	for i, d := range res.Differences {
		if i == show {
			fmt.Fprintf(w, "... and %d more\n", len(res.Differences)-show)
			break
		}
		id := d.ID
		if d.Table != "" {
			id = d.Table + " " + d.ID
		}
		switch d.Kind {
		case "missing_live":
			fmt.Fprintf(w, "%s: missing from the live table\n", id)
		case "missing_rebuilt":
			fmt.Fprintf(w, "%s: in the live table but not in the events\n", id)
		default:
			var cols []string
			for _, c := range d.Columns {
				if c.Live == "" && c.Rebuilt == "" {
					cols = append(cols, c.Column)
				} else {
					cols = append(cols, fmt.Sprintf("%s (live %s, rebuilt %s)", c.Column, c.Live, c.Rebuilt))
				}
			}
			fmt.Fprintf(w, "%s: differs in %s\n", id, strings.Join(cols, ", "))
		}
	}
	noun := "rows"
	if name == projections.UsersName {
		noun = "users"
	}
	fmt.Fprintf(w, "%d %s differ\n", len(res.Differences), noun)
}

// progressView shows rebuild progress: a bar on a terminal, else a plain
// line every few seconds and on each new phase.
type progressView struct {
	w     io.Writer
	what  string
	unit  string
	bar   *progressbar.ProgressBar
	phase string
	last  time.Time
	start time.Time
}

func (a *app) progress(what string) *progressView { return a.progressOf(what, "events") }

// progressOf is progress counting unit ("events", "users").
func (a *app) progressOf(what, unit string) *progressView {
	v := &progressView{w: a.stderr, what: what, unit: unit, start: time.Now()}
	if f, ok := a.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		v.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString(unit),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionFullWidth(),
		)
	}
	return v
}

func (v *progressView) update(phase string, done, total int64) {
	if v.bar != nil {
		if phase != v.phase {
			v.phase = phase
			v.bar.Describe(v.what + ": " + phase)
		}
		if total != v.bar.GetMax64() {
			v.bar.ChangeMax64(total)
		}
		_ = v.bar.Set64(done)
		return
	}
	if phase == v.phase && time.Since(v.last) < 2*time.Second {
		return
	}
	v.phase, v.last = phase, time.Now()
	rate := float64(done) / max(time.Since(v.start).Seconds(), 0.001)
	eta := ""
	if total > done && rate > 0 {
		eta = fmt.Sprintf(", ETA %s", (time.Duration(float64(total-done)/rate) * time.Second).Round(time.Second))
	}
	fmt.Fprintf(v.w, "%s: %s %d/%d %s (%.0f %s/s%s)\n", v.what, phase, done, total, v.unit, rate, v.unit, eta)
}

func (v *progressView) finish() {
	if v.bar != nil {
		_ = v.bar.Finish()
		fmt.Fprintln(v.w)
	}
}

// projectorPass runs fn, a pass over the whole ledger (rebuild, check) of
// projection name, with its projector, the database, progress shown as
// "<what> <name>", and the whole-ledger GC setting. It returns the
// projector (nil when it could not be opened) and fn's error.
func (a *app) projectorPass(cmd *cobra.Command, name, what string, fn func(*sqlx.DB, projections.Projector, projections.Progress) error) (projections.Projector, error) {
	p, db, err := a.openProjector(cmd, name)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	undoGC, _, err := tuneGC(a.env, passGCPercent, passMemLimit)
	if err != nil {
		return p, err
	}
	defer undoGC()
	prog := a.progress(what + " " + p.Name())
	err = fn(db, p, prog.update)
	prog.finish()
	return p, err
}
