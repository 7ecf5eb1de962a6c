package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/handlers"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// ceilingSecretEnv passes the signing secret to the ceiling server.
const ceilingSecretEnv = "LEDGER_BENCH_CEILING_SECRET"

// acceptAll is the ceiling server's Appender: it stores nothing and says
// every delivery was new. Only `bench ceiling-server` uses it.
type acceptAll struct{}

func (acceptAll) AppendDelivery(context.Context, domain.Delivery) (domain.AppendResult, error) {
	return domain.AppendStored, nil
}

// ceilingServerCmd is the hidden `ledger bench ceiling-server`: the
// service's HTTP surface (handlers.NewServer: middleware, metrics, the
// webhook handler with its Svix verification and envelope checks) on a
// loopback port, with a store that keeps nothing, and no database,
// projector or sealer. It prints its address on stdout and serves until
// its stdin closes. bench ingest --ceiling sends to it: what the webhook
// path costs before anything is stored, the ceiling of any ledger behind it.
func (a *app) ceilingServerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "ceiling-server",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			undo, _, err := tuneGC(a.env, serveGCPercent, serveMemLimit) // as serve runs
			if err != nil {
				return err
			}
			defer undo()
			verifier, err := svixsig.NewVerifier(strings.Fields(os.Getenv(ceilingSecretEnv)))
			if err != nil {
				return err
			}
			metrics, err := handlers.NewMetrics(prometheus.NewRegistry())
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			srv := &http.Server{Handler: handlers.NewServer(handlers.Deps{Log: log, Verifier: verifier, Store: acceptAll{}, Observer: metrics, Metrics: metrics}),
				ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintln(a.stdout, ln.Addr().String())
			go func() { _, _ = io.Copy(io.Discard, os.Stdin); srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
}

// ceilingChild is a running `bench ceiling-server` child.
type ceilingChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  string
}

// startCeilingServer starts the ceiling server with secret and waits for
// its address.
func startCeilingServer(ctx context.Context, secret string) (*ceilingChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench", "ceiling-server")
	cmd.Env = append(os.Environ(), ceilingSecretEnv+"="+secret)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the ceiling server: %w", err)
	}
	c := &ceilingChild{cmd: cmd, stdin: stdin}
	line := make(chan string, 1)
	go func() {
		b := make([]byte, 128)
		n, _ := io.ReadAtLeast(out, b, 1)
		line <- strings.TrimSpace(string(b[:n]))
	}()
	select {
	case c.addr = <-line:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	if _, err := net.ResolveTCPAddr("tcp", c.addr); err != nil || c.addr == "" {
		c.stop()
		return nil, fmt.Errorf("the ceiling server did not start (it printed %q)", c.addr)
	}
	return c, nil
}

func (c *ceilingChild) stop() {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// ingestCeiling sends o's load to a ceiling server (ceilingServerCmd) and
// prints its rate, latency and CPU per delivery, and, when base is not
// nil, its rate over the baseline's: the most this machine's senders and
// the service's HTTP surface allow, before any storage.
func (a *app) ingestCeiling(ctx context.Context, o ingestOptions, p *payloads, ledger ingestRun, base *baselineResult) error {
	o.secret = clerkgen.NewSecret()
	c, err := startCeilingServer(ctx, o.secret)
	if err != nil {
		return err
	}
	defer c.stop()
	run := ingestRun{target: "http://" + c.addr + "/api/webhooks/clerk"}
	if err := a.sendIngest(ctx, o, p, ingestService{label: "ceiling", ceilingPID: c.cmd.Process.Pid}, &run); err != nil {
		return err
	}
	if base != nil && base.rate > 0 {
		fmt.Fprintf(a.stdout, "ceiling ratio: %.2f (HTTP and Svix only, nothing stored / baseline); the ledger reaches %.2f of this ceiling\n",
			run.rate/base.rate, ledger.rate/run.rate)
	} else if run.rate > 0 {
		fmt.Fprintf(a.stdout, "ceiling: the ledger reaches %.2f of it\n", ledger.rate/run.rate)
	}
	return nil
}
