package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	svix "github.com/svix/svix-webhooks/go"
)

// The hand-written requests of the benchmarks' deliverer are deliveries a
// Svix verifier takes, body intact, on connections kept alive across
// requests; an answer that closes its connection, or a server that drops
// it, costs one request and the next dials again.
func TestDelivererSendsVerifiableDeliveriesOnKeptConnections(t *testing.T) {
	secret := clerkgen.NewSecret()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	bodies := map[string]string{}
	var dials, closes atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		if err := wh.Verify(body, r.Header); err != nil || r.URL.Path != "/api/webhooks/clerk" || r.URL.RawQuery != "x=1" || r.Method != http.MethodPost {
			http.Error(w, "refused", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		bodies[r.Header.Get("svix-id")] = string(body)
		mu.Unlock()
		switch r.Header.Get("svix-id") {
		case "msg_close": // answer, then close the connection
			w.Header().Set("Connection", "close")
			closes.Add(1)
		case "msg_drop": // drop the connection without an answer
			hj, _ := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Close()
			return
		}
		w.Write([]byte("stored"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	signer, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDeliverer(srv.URL+"/api/webhooks/clerk?x=1", signer, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx := context.Background()
	post := func(id, body string) (int, error) { return d.post(ctx, id, []byte(body)) }

	for i, id := range []string{"msg_1", "msg_2", "msg_3"} {
		body := `{"type":"user.updated","n":` + strings.Repeat("7", 1000*i+1) + `}`
		if status, err := post(id, body); err != nil || status != http.StatusOK {
			t.Fatalf("post %s: status %d, %v", id, status, err)
		}
		if bodies[id] != body {
			t.Fatalf("%s arrived as %q", id, bodies[id])
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("three sequential deliveries took %d connections, want 1 kept alive", n)
	}
	if status, err := post("msg_close", "{}"); err != nil || status != http.StatusOK {
		t.Fatalf("post msg_close: status %d, %v", status, err)
	}
	if status, err := post("msg_4", "{}"); err != nil || status != http.StatusOK || dials.Load() != 2 {
		t.Fatalf("after a closing answer: status %d, %v, %d connections (want a second one)", status, err, dials.Load())
	}
	if _, err := post("msg_drop", "{}"); err == nil {
		t.Fatal("a dropped connection gave no error")
	}
	if status, err := post("msg_5", "{}"); err != nil || status != http.StatusOK || dials.Load() != 3 {
		t.Fatalf("after a dropped connection: status %d, %v, %d connections (want a third one)", status, err, dials.Load())
	}
	// A forged delivery is answered, not an error.
	forged, err := newDeliverer(srv.URL+"/api/webhooks/clerk?x=1", mustSigner(t, clerkgen.NewSecret()), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer forged.close()
	if status, err := forged.post(ctx, "msg_forged", []byte("{}")); err != nil || status != http.StatusUnauthorized {
		t.Fatalf("forged delivery: status %d, %v", status, err)
	}
	for _, bad := range []string{"", "ftp://h/x", "127.0.0.1:80/x", "http://"} {
		if _, err := newDeliverer(bad, signer, 1); err == nil {
			t.Errorf("newDeliverer(%q) took it", bad)
		}
	}
}

func mustSigner(t *testing.T, secret string) *clerkgen.Signer {
	t.Helper()
	s, err := clerkgen.NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
