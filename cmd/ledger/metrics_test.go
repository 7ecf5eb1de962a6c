package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
)

// serve with LOG_FORMAT=json logs JSON lines only, each request's with its
// request_id, and serves /metrics from its private registry: Go, process and
// database pool collectors, deliveries, and the projectors it runs.
func TestServeJSONLogsAndMetrics(t *testing.T) {
	secret := clerkgen.NewSecret()
	env := map[string]string{
		"DATABASE_URL":                 schematest.NewURL(t),
		"CLERK_WEBHOOK_SIGNING_SECRET": secret,
		"LEDGER_ADDR":                  freeAddr(t),
		"LOG_FORMAT":                   "json",
		"LEDGER_TRUSTED_PROXIES":       "127.0.0.1", // the test client stands for the proxy whose request ids are kept
	}
	logs := startService(t, env, "serve")
	base := "http://" + env["LEDGER_ADDR"]

	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	body, err := clerkgen.Event("user.created", clerkgen.User{ID: "user_metrics", Email: "metrics@example.com", FirstName: "Ada"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/api/webhooks/clerk", bytes.NewReader(body))
	for k, v := range signer.Headers("msg_metrics", time.Now(), body) {
		req.Header[k] = v
	}
	req.Header.Set("X-Request-Id", "cli-req-1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Header.Get("X-Request-Id") != "cli-req-1" {
		t.Fatalf("delivery: %d, X-Request-Id %q", res.StatusCode, res.Header.Get("X-Request-Id"))
	}

	scrape := func() string {
		t.Helper()
		res, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d", res.StatusCode)
		}
		return string(b)
	}
	sample := func(text, series string) (float64, bool) {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
		if m == nil {
			return 0, false
		}
		v, err := strconv.ParseFloat(m[1], 64)
		return v, err == nil
	}
	// The projectors run in-process: wait until both have the event.
	var text string
	deadline := time.Now().Add(20 * time.Second)
	for {
		text = scrape()
		u, ok1 := sample(text, `ledger_projector_applied_total{projector="users"}`)
		c, ok2 := sample(text, `ledger_log_tree_size`)
		if ok1 && ok2 && u == 1 && c == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projectors never reported the event:\n%s", text)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`ledger_webhook_deliveries_total{outcome="stored"}`: 1,
		`ledger_projections_up`:                             1,
		`ledger_projector_lag_events{projector="users"}`:    0,
		`ledger_log_unsealed_events`:                        0,
		// The two pools at their default sizes: ingest keeps its own.
		`go_sql_max_open_connections{db_name="ledger"}`:        24,
		`go_sql_max_open_connections{db_name="ledger_ingest"}`: 8,
	} {
		if v, ok := sample(text, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", `go_sql_open_connections{db_name="ledger"}`,
		`ledger_projector_checkpoint_position{projector="users"}`, `ledger_append_duration_seconds_count{result="ok"}`, `ledger_group_commit_deliveries_count`,
		`ledger_http_request_duration_seconds_count{code="200",route="POST /api/webhooks/clerk"}`} {
		if _, ok := sample(text, name); !ok {
			t.Errorf("/metrics has no %s", name)
		}
	}

	var sawDelivery bool
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("LOG_FORMAT=json wrote a line that is not JSON: %q", sc.Text())
		}
		if line["msg"] == "webhook delivery" && line["delivery_id"] == "msg_metrics" {
			sawDelivery = true
			if line["request_id"] != "cli-req-1" {
				t.Errorf("delivery log line without its request_id: %s", sc.Text())
			}
		}
	}
	if !sawDelivery {
		t.Errorf("no JSON delivery log line:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "metrics@example.com") || strings.Contains(logs.String(), secret[6:]) {
		t.Error("an email or the signing secret was logged")
	}
}

// LOG_FORMAT and --log-format accept text and json only; anything else
// stops start-up with one line naming the setting.
func TestLogFormatValidated(t *testing.T) {
	for _, c := range []struct {
		env  string
		args []string
		want string
	}{
		{"yaml", []string{"serve"}, `LOG_FORMAT "yaml" is not text or json`},
		{"", []string{"serve", "--log-format", "JSON5"}, `LOG_FORMAT "JSON5" is not text or json`},
		{"json", []string{"project", "--log-format", "logfmt"}, `LOG_FORMAT "logfmt" is not text or json`},
	} {
		env := map[string]string{"LOG_FORMAT": c.env, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/none"}
		var out, errOut bytes.Buffer
		err := run(context.Background(), c.args, envOf(env), &out, &errOut)
		if err == nil || err.Error() != c.want {
			t.Errorf("LOG_FORMAT=%q %v: err %v, want %q", c.env, c.args, err, c.want)
		}
	}
}
