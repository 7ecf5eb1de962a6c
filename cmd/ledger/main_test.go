package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/userkeys"
	svix "github.com/svix/svix-webhooks/go"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running service.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testMasterKey is the LEDGER_MASTER_KEY every test process gets unless
// its settings name one (an empty one: none).
const testMasterKey = "clerk-ledger-master-key-v1:TAxrjHzGkAJXS+fQbaPHnf1WBTDyl5Y+bt5TGO/b9rg="

// withTestKeys returns ctx with testMasterKey's keyring: what a test's own
// reads of the ledger need to open sealed bodies.
func withTestKeys(ctx context.Context) context.Context {
	k, err := userkeys.Load(testMasterKey)
	if err != nil {
		panic(err) // a constant of this file
	}
	return schema.WithKeyring(ctx, k)
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := m[k]; ok || k != "LEDGER_MASTER_KEY" {
			return v
		}
		return testMasterKey
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitReady(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		res, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("service at %s never became ready", addr)
}

// startService runs `ledger <args>` in-process until the test ends and waits
// until it is ready.
func startService(t *testing.T, env map[string]string, args ...string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, envOf(env), &out, &logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%v: %v\n%s", args, err, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%v did not shut down", args)
		}
	})
	waitReady(t, env["LEDGER_ADDR"])
	return &logs
}

func TestServeAndWebhookSend(t *testing.T) {
	secret := clerkgen.NewSecret()
	env := map[string]string{
		"DATABASE_URL":                 schematest.NewURL(t),
		"CLERK_WEBHOOK_SIGNING_SECRET": secret,
		"LEDGER_ADDR":                  freeAddr(t),
	}
	logs := startService(t, env, "serve")

	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"webhook", "send", "user.created", "--user-id", "user_cli", "--delivery-id", "msg_cli", "--first-name", "Ada"}, envOf(env), &out, &errOut)
	if err != nil {
		t.Fatalf("webhook send: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "200 OK") || !strings.Contains(out.String(), `"stored"`) {
		t.Errorf("webhook send printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"webhook", "send", "user.created", "--user-id", "user_cli", "--delivery-id", "msg_cli"}, envOf(env), &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"duplicate"`) {
		t.Errorf("redelivery printed %q", out.String())
	}
	// A wrong secret is refused and send exits non-zero.
	wrong := map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret(), "LEDGER_ADDR": env["LEDGER_ADDR"]}
	out.Reset()
	if err := run(context.Background(), []string{"webhook", "send", "session.created"}, envOf(wrong), &out, &errOut); err == nil || !strings.Contains(out.String(), "401") {
		t.Errorf("send with a wrong secret: err %v, printed %q", err, out.String())
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(out.String(), secret) {
		t.Error("the signing secret appears in logs or output")
	}
	// The second send builds its body anew (its timestamps differ): the
	// stored body stays and the redelivery is logged as a conflict.
	if !strings.Contains(logs.String(), "delivery_id=msg_cli") || !strings.Contains(logs.String(), "outcome=conflict") {
		t.Errorf("no structured delivery log line:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "ada@example.com") {
		t.Error("an email address was logged")
	}
}

// A serve configured with a good secret refuses a delivery signed with an
// empty HMAC key (what "whsec_" decodes to), and stores nothing.
func TestServeRefusesEmptyKeySignature(t *testing.T) {
	env := map[string]string{
		"DATABASE_URL":                 schematest.NewURL(t),
		"CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret(),
		"LEDGER_ADDR":                  freeAddr(t),
	}
	startService(t, env, "serve")
	empty, err := svix.NewWebhook("whsec_")
	if err != nil {
		t.Fatal(err)
	}
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_forged", Email: "f@example.com"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sig, _ := empty.Sign("msg_forged", now, body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+env["LEDGER_ADDR"]+"/api/webhooks/clerk", bytes.NewReader(body))
	req.Header.Set("svix-id", "msg_forged")
	req.Header.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("svix-signature", sig)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("delivery signed with an empty key: %d, want 401", res.StatusCode)
	}
	db := schematest.Open(t, env["DATABASE_URL"])
	var n int
	if err := db.Get(&n, `SELECT count(*) FROM events`); err != nil || n != 0 {
		t.Errorf("%d events stored (err %v), want 0", n, err)
	}
}

func TestStartupRefusesBadSettings(t *testing.T) {
	good := map[string]string{
		"DATABASE_URL":                 "postgres://postgres@127.0.0.1:5432/x",
		"CLERK_WEBHOOK_SIGNING_SECRET": clerkgen.NewSecret(),
	}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range good {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		env  map[string]string
		want string
	}{
		{with("DATABASE_URL", ""), "DATABASE_URL is not set"},
		{with("DATABASE_URL", "mysql:/nope"), "DATABASE_URL is malformed"},
		{with("CLERK_WEBHOOK_SIGNING_SECRET", ""), "CLERK_WEBHOOK_SIGNING_SECRET is not set"},
		{with("CLERK_WEBHOOK_SIGNING_SECRET", "secret123"), "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed"},
		{with("CLERK_WEBHOOK_SIGNING_SECRET", good["CLERK_WEBHOOK_SIGNING_SECRET"]+" whsec_!!!"), "CLERK_WEBHOOK_SIGNING_SECRET #2 is malformed"},
		// An empty key would verify signatures anyone can make (issue 11, item 2).
		{with("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_"), "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed"},
		{with("CLERK_WEBHOOK_SIGNING_SECRET", good["CLERK_WEBHOOK_SIGNING_SECRET"]+" whsec_"), "CLERK_WEBHOOK_SIGNING_SECRET #2 is malformed"},
		{with("CLERK_WEBHOOK_SIGNING_SECRET", "whsec_c2hvcnQta2V5"), "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed: its key is 9 bytes"},
		{with("LEDGER_WEBHOOK_BODY_MEMORY", "lots"), "LEDGER_WEBHOOK_BODY_MEMORY"},
		{with("LEDGER_WEBHOOK_BODY_MEMORY", "64KiB"), "LEDGER_WEBHOOK_BODY_MEMORY"},
		{with("LEDGER_ADDR", "nohostport"), "LEDGER_ADDR"},
		{with("LOG_FORMAT", "xml"), "LOG_FORMAT"},
		{with("CLERK_SECRET_KEY", "nope"), "CLERK_SECRET_KEY is malformed"},
		{with("GOGC", "lots"), "GOGC"},
		{with("GOMEMLIMIT", "1GB"), "GOMEMLIMIT"},
		{with("LEDGER_DB_INGEST_CONNS", "2"), "LEDGER_DB_INGEST_CONNS"},
		{with("LEDGER_DB_WEB_CONNS", "many"), "LEDGER_DB_WEB_CONNS"},
		{with("LEDGER_DB_AUDIT_CONNS", "24"), "LEDGER_DB_AUDIT_CONNS (24) must be less than LEDGER_DB_WEB_CONNS (24)"},
		{with("LEDGER_DB_AUDIT_CONNS", "0"), "LEDGER_DB_AUDIT_CONNS"},
		{with("LEDGER_EXPORT_IDLE_TIMEOUT", "30"), "LEDGER_EXPORT_IDLE_TIMEOUT"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"serve"}, envOf(c.env), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.env, err, c.want)
		}
		if printed := err.Error() + out.String() + errOut.String(); strings.Contains(printed, good["CLERK_WEBHOOK_SIGNING_SECRET"][6:]) || strings.Contains(printed, "secret123") || strings.Contains(printed, "c2hvcnQta2V5") {
			t.Errorf("a secret was printed: %v", err)
		}
		if strings.Count(err.Error(), "\n") != 0 {
			t.Errorf("error is not one line: %q", err)
		}
	}
}

func TestDotEnvAndFlagPrecedence(t *testing.T) {
	dir := t.TempDir()
	old, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(old)
	fileSecret, envSecret := clerkgen.NewSecret(), clerkgen.NewSecret()
	os.WriteFile(filepath.Join(dir, ".env"), []byte("CLERK_WEBHOOK_SIGNING_SECRET="+fileSecret+"\nLEDGER_ADDR=127.0.0.1:1111\n"), 0o600)

	// Inspect the settings through the config loader of a real command.
	check := func(env map[string]string, args []string, wantSecret, wantAddr string) {
		t.Helper()
		a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		dot, err := readDotEnv(".env")
		if err != nil {
			t.Fatal(err)
		}
		a.env = func(k string) string {
			if v := env[k]; v != "" {
				return v
			}
			return dot[k]
		}
		cmd := a.serveCmd()
		a.rootCmd() // persistent flags
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		cfg, err := a.loadConfig(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.WebhookSecrets[0] != wantSecret || cfg.Addr != wantAddr {
			t.Errorf("env %v args %v: secret from wrong source or addr %s", env, args, cfg.Addr)
		}
	}
	check(nil, nil, fileSecret, "127.0.0.1:1111")
	check(map[string]string{"CLERK_WEBHOOK_SIGNING_SECRET": envSecret}, nil, envSecret, "127.0.0.1:1111")
	check(map[string]string{"LEDGER_ADDR": "127.0.0.1:2222"}, []string{"--addr", "127.0.0.1:3333"}, fileSecret, "127.0.0.1:3333")

	os.WriteFile(filepath.Join(dir, ".env"), []byte("THIS IS NOT=\"an env file"), 0o600)
	err := run(context.Background(), []string{"serve"}, envOf(nil), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), ".env") {
		t.Errorf("malformed .env: %v", err)
	}
}

func TestMigrateCommand(t *testing.T) {
	env := map[string]string{"DATABASE_URL": schematest.NewURL(t)}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"migrate"}, envOf(env), &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "applied 00001") {
		t.Errorf("migrate printed %q", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"migrate", "status"}, envOf(env), &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "pending") || !strings.Contains(out.String(), "applied") {
		t.Errorf("status printed %q", out.String())
	}
}
