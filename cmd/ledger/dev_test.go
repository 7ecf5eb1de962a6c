package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/translog"
)

// With no server at the default URL, dev starts a private cluster from the
// machine's PostgreSQL binaries, and stop stops it.
func TestDevStartsPrivateCluster(t *testing.T) {
	if findPGBin() == "" {
		t.Fatal("no PostgreSQL binaries on this machine: .ci/run installs postgresql")
	}
	dir := reachableTempDir(t)
	_, portStr, _ := strings.Cut(freeAddr(t), ":")
	port, _ := strconv.Atoi(portStr)
	dead := "postgres://postgres@127.0.0.1:" + freeAddr(t)[len("127.0.0.1:"):] + "/ledger?sslmode=disable"
	var logs bytes.Buffer
	ctx := context.Background()
	dsn, stop, err := devDatabase(ctx, slog.New(slog.NewTextHandler(&logs, nil)), dir, dead, port)
	if err != nil {
		t.Fatalf("devDatabase: %v\n%s", err, logs.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			stop()
		}
	}()
	if !strings.Contains(logs.String(), "starting a private cluster") {
		t.Errorf("dev did not say it started a cluster: %s", logs.String())
	}
	db, err := schema.Open(ctx, dsn, schema.PoolOptions{MaxOpen: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := schema.Migrate(ctx, db.DB); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(dir, "postgres", "PG_VERSION")); err != nil {
		t.Errorf("cluster not under the data dir: %v", err)
	}
	stop()
	stopped = true
	if serverAnswers(dsn) {
		t.Error("private cluster still answers after stop")
	}
}

// uncreatedDatabaseURL returns the URL of a database that does not exist
// yet (dev creates it), dropped when t ends.
func uncreatedDatabaseURL(t *testing.T) string {
	t.Helper()
	u, _ := url.Parse(schematest.NewURL(t))
	u.Path += "_dev"
	t.Cleanup(func() {
		admin := schematest.Open(t, schematest.ServerURL())
		admin.Exec(`DROP DATABASE IF EXISTS ` + strings.TrimPrefix(u.Path, "/") + ` WITH (FORCE)`)
	})
	return u.String()
}

// reachableTempDir returns t.TempDir() opened (with its parents up to /tmp)
// to other users: a private cluster's server runs as the postgres user when
// the test runs as root.
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	return dir
}

func TestDevOnExistingServerGeneratesSecret(t *testing.T) {
	dir := t.TempDir()
	old, _ := os.Getwd()
	os.Chdir(dir)
	defer os.Chdir(old)

	// A database that does not exist yet: dev creates it.
	dsn := uncreatedDatabaseURL(t)
	env := map[string]string{"DATABASE_URL": dsn, "LEDGER_ADDR": freeAddr(t)}
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"dev"}, envOf(env), &out, &logs) }()
	waitReady(t, env["LEDGER_ADDR"])

	secret, err := os.ReadFile(filepath.Join(dir, ".data", "webhook-secret"))
	if err != nil {
		t.Fatal(err)
	}
	banner := out.String()
	if !strings.Contains(banner, strings.TrimSpace(string(secret))) || !strings.Contains(banner, " webhook send user.created --addr") {
		t.Fatalf("banner lacks the secret or the send command:\n%s", banner)
	}
	// The printed command line works as printed.
	line := banner[strings.Index(banner, "CLERK_WEBHOOK_SIGNING_SECRET="):]
	line = line[:strings.Index(line, "\n")]
	fields := strings.Fields(line)
	sendEnv := map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": strings.TrimPrefix(fields[0], "CLERK_WEBHOOK_SIGNING_SECRET=")}
	var sendOut bytes.Buffer
	if err := run(context.Background(), fields[2:], envOf(sendEnv), &sendOut, &sendOut); err != nil {
		t.Fatalf("printed command failed: %v\n%s", err, sendOut.String())
	}
	// The dev log key is generated in ./.data and signs a checkpoint of the
	// delivery; ledger audit key reads it from the file.
	keyFile := filepath.Join(dir, ".data", "log.key")
	var vkey bytes.Buffer
	if err := run(context.Background(), []string{"audit", "key"}, envOf(map[string]string{"LEDGER_LOG_KEY": keyFile}), &vkey, &vkey); err != nil {
		t.Fatalf("audit key: %v %s", err, vkey.String())
	}
	v, err := translog.ParseVerifier(vkey.String())
	if err != nil {
		t.Fatalf("audit key printed %q: %v", vkey.String(), err)
	}
	db := schematest.Open(t, dsn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cp, err := schema.LatestCheckpoint(context.Background(), db)
		if err == nil {
			if c, err := v.Open([]byte(cp.Note)); err != nil || c.Size < 1 {
				t.Fatalf("dev checkpoint %q: %+v %v", cp.Note, c, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint signed by ledger dev: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	devRefusesRebinding(t, env["LEDGER_ADDR"])
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// devRefusesRebinding checks the dev server at addr, which has projected
// the Ada the printed command sent, against DNS rebinding: requests whose
// Host and Origin name rebind.attacker.example:PORT (a name its owner
// points at 127.0.0.1) get 403, no session cookie and no picker; the same
// requests to localhost sign Ada in.
func devRefusesRebinding(t *testing.T, addr string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	send := func(method, path, host, form string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		if method == http.MethodPost {
			req.Header.Set("Origin", "http://"+host)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	local, rebind := "localhost:"+port, "rebind.attacker.example:"+port
	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" {
		_, picker := send(http.MethodGet, "/dev/sign-in", local, "")
		if m := regexp.MustCompile(`name="user_id" value="(user_[A-Za-z0-9]+)"`).FindStringSubmatch(picker); m != nil && strings.Contains(picker, "ada@example.com") {
			id = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("Ada never showed in the dev picker:\n%s", picker)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	res, body := send(http.MethodPost, "/dev/sign-in", rebind, "user_id="+id)
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Errorf("rebound POST /dev/sign-in: %s, cookies %v: %.200s", res.Status, res.Cookies(), body)
	}
	for _, path := range []string{"/dev/sign-in", "/api/me", "/"} {
		if res, body := send(http.MethodGet, path, rebind, ""); res.StatusCode != http.StatusForbidden || strings.Contains(body, "ada@example.com") {
			t.Errorf("rebound GET %s: %s %.200s", path, res.Status, body)
		}
	}
	if res, _ := send(http.MethodPost, "/dev/sign-in", local, "user_id="+id); res.StatusCode != http.StatusSeeOther || len(res.Cookies()) != 1 {
		t.Errorf("POST /dev/sign-in on localhost: %s %v", res.Status, res.Cookies())
	}
}

// TestSelfCommand: the banner's send line names the command that runs this
// binary again as printed: go run for a go-run build, ledger when PATH has
// it, else the absolute path.
func TestSelfCommand(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ledger")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe := func(p string) func() (string, error) { return func() (string, error) { return p, nil } }
	onPath := func(string) (string, error) { return bin, nil }
	notOnPath := func(string) (string, error) { return "", os.ErrNotExist }
	goRun := filepath.Join(os.TempDir(), "go-build123456", "b001", "exe", "ledger")
	cases := []struct {
		exe  func() (string, error)
		look func(string) (string, error)
		want string
	}{
		{exe(goRun), onPath, "go run ./cmd/ledger"},
		{exe(bin), onPath, "ledger"},
		{exe(bin), notOnPath, bin},
		{exe("/opt/other/ledger"), onPath, "/opt/other/ledger"},
	}
	for _, c := range cases {
		if got := selfCommand(c.exe, c.look); got != c.want {
			p, _ := c.exe()
			t.Errorf("selfCommand(%s) = %q, want %q", p, got, c.want)
		}
	}
}
