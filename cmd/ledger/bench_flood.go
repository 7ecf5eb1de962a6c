package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/spf13/cobra"
)

type floodOptions struct {
	connections int
	duration    time.Duration
	bodyBytes   int
	mode        string
	server      string
	database    string
	dbName      string
}

// floodModes are the unauthenticated deliveries `bench flood` can send.
var floodModes = map[string]string{
	"stale":    "signed with the right secret 10 minutes ago (outside the tolerance)",
	"unsigned": "no Svix headers at all",
	"forged":   "fresh svix-timestamp, a well-formed v1 signature that is wrong (the body must be read to tell)",
}

func (a *app) benchFloodCmd() *cobra.Command {
	var o floodOptions
	modes := slices.Sorted(func(yield func(string) bool) {
		for m := range floodModes {
			if !yield(m) {
				return
			}
		}
	})
	var help strings.Builder
	for _, m := range modes {
		fmt.Fprintf(&help, "  %-9s %s\n", m, floodModes[m])
	}
	cmd := &cobra.Command{
		Use:   "flood",
		Short: "Flood the webhook with large unauthenticated deliveries and report the server's RSS",
		Long: `flood starts 'ledger serve' as a child process on a scratch database
(ledger_bench_flood on the DATABASE_URL server, or the dev default), then keeps
--connections TCP connections busy for --duration, each sending a delivery with
a --body-bytes body (Content-Length set) and, as soon as it is answered, the
next one on a new connection. --mode says what the deliveries carry:

` + help.String() + `
It samples the server's RSS every 50 ms and prints the peak, the answers by
status, and whether a genuine delivery sent during and after the flood was
stored, and how many events the flood left in the ledger (it exits 1 when a
flood delivery was answered 2xx, an event other than the genuine ones was
stored, or the genuine delivery after the flood failed). --server runs another
ledger binary as the server (e.g. a build of an older commit, for a
before/after comparison).`,
		Example: "  ledger bench flood --connections 2000 --duration 30s --mode stale",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.connections < 1 || o.duration <= 0 || o.bodyBytes < 1 {
				return domain.Errorf(domain.EINVALID, "--connections and --body-bytes must be >= 1 and --duration > 0")
			}
			if !validDBName(o.dbName) {
				return domain.Errorf(domain.EINVALID, "--db-name %q: use lower-case letters, digits and _", o.dbName)
			}
			if _, ok := floodModes[o.mode]; !ok {
				return domain.Errorf(domain.EINVALID, "--mode %q: want one of %s", o.mode, strings.Join(modes, ", "))
			}
			o.database = a.setting(cmd, "database-url", "DATABASE_URL")
			return a.benchFlood(cmd.Context(), o)
		},
	}
	cmd.Flags().IntVarP(&o.connections, "connections", "c", 2000, "concurrent connections")
	cmd.Flags().DurationVarP(&o.duration, "duration", "d", 30*time.Second, "how long to flood")
	cmd.Flags().IntVar(&o.bodyBytes, "body-bytes", 1<<20-64, "body size of each delivery")
	cmd.Flags().StringVar(&o.mode, "mode", "stale", "what the deliveries carry: "+strings.Join(modes, ", "))
	cmd.Flags().StringVar(&o.server, "server", "", "ledger binary to run as the server (default: this one)")
	cmd.Flags().StringVar(&o.dbName, "db-name", "ledger_bench_flood", "scratch database to create (dropped first) on the DATABASE_URL server")
	return cmd
}

func (a *app) benchFlood(ctx context.Context, o floodOptions) error {
	dsn, err := benchDatabase(ctx, o.database, o.dbName)
	if err != nil {
		return err
	}
	exe := o.server
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return err
		}
	}
	secret := clerkgen.NewSecret()
	child, err := startChildServiceExe(ctx, exe, dsn, secret, nil)
	if err != nil {
		return err
	}
	defer child.stop()
	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		return err
	}
	pid := child.cmd.Process.Pid
	idle := procStatusBytes(pid, "VmRSS:")
	fmt.Fprintf(a.stdout, "bench flood: %d connections × %d-byte bodies (%s) for %s -> %s; server RSS before %.1f MB\n",
		o.connections, o.bodyBytes, o.mode, o.duration, child.addr, float64(idle)/1e6)

	// RSS sampler.
	var peak atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := procStatusBytes(pid, "VmRSS:"); rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	body := bytes.Repeat([]byte("x"), o.bodyBytes)
	copy(body, `{"type":"user.created","data":{"id":"user_flood","pad":"`)
	copy(body[len(body)-2:], `"}`)
	var mu sync.Mutex
	statuses := map[int]int{}
	var transportErrors atomic.Int64
	deadline := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for w := range o.connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				status, err := floodOnce(child.addr, floodHeader(o.mode, signer, fmt.Sprintf("msg_flood_%d_%d", w, i), len(body)), body)
				if err != nil {
					transportErrors.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		}()
	}
	// A genuine delivery in the middle of the flood.
	time.Sleep(o.duration / 2)
	during := genuineDelivery(ctx, child.addr, signer, "msg_flood_genuine_during")
	wg.Wait()
	stopSampling()
	<-sampled
	after := genuineDelivery(ctx, child.addr, signer, "msg_flood_genuine_after")

	codes := slices.Sorted(func(yield func(int) bool) {
		for c := range statuses {
			if !yield(c) {
				return
			}
		}
	})
	var parts []string
	total := 0
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d × %d", statuses[c], c))
		total += statuses[c]
	}
	fmt.Fprintf(a.stdout, "answers:  %d (%s), transport errors %d\n", total, strings.Join(parts, ", "), transportErrors.Load())
	fmt.Fprintf(a.stdout, "server RSS: peak %.1f MB (sampled every 50 ms), VmHWM %.1f MB\n", float64(peak.Load())/1e6, float64(child.peakRSS())/1e6)
	fmt.Fprintf(a.stdout, "genuine delivery during the flood: %s; after: %s\n", during, after)
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		return err
	}
	defer db.Close()
	var flooded, genuine int
	if err := db.GetContext(ctx, &flooded, `SELECT count(*) FROM events WHERE delivery_id NOT LIKE 'msg_flood_genuine_%'`); err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	if err := db.GetContext(ctx, &genuine, `SELECT count(*) FROM events WHERE delivery_id LIKE 'msg_flood_genuine_%'`); err != nil {
		return fmt.Errorf("count events: %w", err)
	}
	fmt.Fprintf(a.stdout, "events stored: %d from the flood, %d genuine\n", flooded, genuine)
	ok2xx := 0
	for c, n := range statuses {
		if c/100 == 2 {
			ok2xx += n
		}
	}
	if ok2xx > 0 || flooded > 0 || !strings.HasPrefix(after, "200 ") {
		return exitCode(1)
	}
	return nil
}

// floodHeader returns the request line and headers of one flood delivery.
func floodHeader(mode string, signer *clerkgen.Signer, id string, n int) []byte {
	var h http.Header
	switch mode {
	case "stale":
		h = signer.Headers(id, time.Now().Add(-10*time.Minute), nil) // the body is never read: the signature's input does not matter
	case "forged":
		h = signer.Headers(id, time.Now(), nil)
		h.Set("svix-signature", "v1,"+strings.Repeat("A", 43)+"=")
	default:
		h = http.Header{"Content-Type": {"application/json"}}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST /api/webhooks/clerk HTTP/1.1\r\nHost: ledger\r\nContent-Length: %d\r\n", n)
	h.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// floodOnce sends one delivery on a new connection, writing the body while
// it waits for the answer, and returns the answer's status.
func floodOnce(addr string, header, body []byte) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	written := make(chan struct{})
	go func() {
		defer close(written)
		if _, err := conn.Write(header); err == nil {
			conn.Write(body) // fails once the server answers and closes: expected
		}
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		<-written
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	res.Body.Close()
	conn.Close()
	<-written
	return res.StatusCode, nil
}

// genuineDelivery sends one validly signed delivery and says how it went.
func genuineDelivery(ctx context.Context, addr string, signer *clerkgen.Signer, id string) string {
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: clerkgen.NewID("user"), Email: "genuine@example.com"}, time.Now())
	if err != nil {
		return err.Error()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/webhooks/clerk", bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header = signer.Headers(id, time.Now(), body)
	start := time.Now()
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "transport error: " + err.Error()
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
	return strconv.Itoa(res.StatusCode) + " " + strings.TrimSpace(string(answer)) + " in " + ms(time.Since(start))
}
