// Package natstest gives tests their own NATS server with JetStream: a real
// nats-server child process on a free loopback port with its own store
// directory, which a test may stop, kill and restart (outage tests), and a
// reader of a stream's messages. The test fails (never skips) when the
// nats-server binary is missing.
package natstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Binary returns the path of nats-server: on PATH, else Debian's /usr/sbin.
func Binary() (string, error) {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server", nil
	}
	return "", errors.New("nats-server not found (Debian: apt-get install nats-server)")
}

// Options configure a Server.
type Options struct {
	// MaxPayload is the server's max_payload in bytes (0: its default, 1 MB).
	MaxPayload int
}

// Server is a nats-server process with JetStream.
type Server struct {
	t        testing.TB
	bin, dir string
	conf     string
	port     int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	logs *bytes.Buffer
}

// Start starts a nats-server with JetStream for t; it is killed when t ends.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n}\n", s.port, filepath.Join(s.dir, "js"))
	if o.MaxPayload > 0 {
		conf += fmt.Sprintf("max_payload: %d\n", o.MaxPayload)
	}
	s.conf = filepath.Join(s.dir, "nats.conf")
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("natstest: %v", err)
	}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// URL is the server's client URL.
func (s *Server) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	cmd := exec.Command(s.bin, "-c", s.conf)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		s.t.Fatalf("natstest: start %s: %v", s.bin, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.cmd, s.done, s.logs = cmd, done, logs
	s.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := s.ping()
		if err == nil {
			return
		}
		select {
		case <-done:
			s.t.Fatalf("natstest: nats-server exited at start:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("natstest: nats-server did not get ready with JetStream: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping connects and asks JetStream for the account's info.
func (s *Server) ping() error {
	nc, err := nats.Connect(s.URL(), nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// Kill stops the server with SIGKILL (its store stays for Restart).
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop stops the server with SIGTERM and waits for it.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Restart starts the stopped server again on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// Connect returns a client connection, closed when the test ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	return nc, js
}

// Msg is one stored message of a stream.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// Count returns how many messages the stream holds (0 when it does not
// exist yet).
func Count(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0
	}
	if err != nil {
		t.Fatalf("natstest: stream %s: %v", stream, err)
	}
	return s.CachedInfo().State.Msgs
}

// Messages reads every message of the stream in stream order, as a
// consumer does (an ordered consumer from the first message).
func Messages(t testing.TB, js jetstream.JetStream, stream string) []Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n := Count(t, js, stream)
	if n == 0 {
		return nil
	}
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("natstest: consumer on %s: %v", stream, err)
	}
	out := make([]Msg, 0, n)
	for uint64(len(out)) < n {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatalf("natstest: fetch from %s: %v", stream, err)
		}
		got := 0
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatalf("natstest: metadata: %v", err)
			}
			out = append(out, Msg{Seq: md.Sequence.Stream, Subject: m.Subject(), Header: m.Headers(), Data: append([]byte(nil), m.Data()...)})
			got++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("natstest: fetch from %s: %v", stream, err)
		}
		if got == 0 && ctx.Err() != nil {
			t.Fatalf("natstest: read %d of %d messages of %s", len(out), n, stream)
		}
	}
	return out
}
