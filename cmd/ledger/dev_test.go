package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
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
	u, _ := url.Parse(schematest.NewURL(t))
	u.Path += "_dev"
	dsn := u.String()
	t.Cleanup(func() {
		admin := schematest.Open(t, schematest.ServerURL())
		admin.Exec(`DROP DATABASE IF EXISTS ` + strings.TrimPrefix(u.Path, "/") + ` WITH (FORCE)`)
	})
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
	if !strings.Contains(banner, strings.TrimSpace(string(secret))) || !strings.Contains(banner, "ledger webhook send user.created") {
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
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
