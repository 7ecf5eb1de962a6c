package handlers

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/schema"
	"github.com/clerk-ledger/clerk-ledger/schema/schematest"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
)

// FuzzClerkWebhook feeds arbitrary headers and bodies to the real webhook
// handler over a real database. Whatever comes in, it never panics, never
// answers 2xx without a valid signature, and always answers 200 for a validly
// signed Clerk envelope. Its seed corpus runs in the normal test suite.
func FuzzClerkWebhook(f *testing.F) {
	db := schematest.NewDB(f)
	store := schema.NewStore(db)
	secret := clerkgen.NewSecret()
	v, err := svixsig.NewVerifier([]string{secret})
	if err != nil {
		f.Fatal(err)
	}
	signer, _ := clerkgen.NewSigner(secret)
	h := NewServer(Deps{Verifier: v, Store: store, Ready: store})

	now := time.Now()
	created, _ := clerkgen.Event("user.created", clerkgen.User{ID: "user_seed", Email: "s@example.com"}, now)
	f.Add("msg_seed_1", "", "", created, true)
	f.Add("msg_seed_2", "", "", []byte(`{"type":"x","data":{}}`), true)
	f.Add("msg_seed_3", "1700000000", "v1,AAAA", created, false)
	f.Add("msg_seed_4", "", "", []byte(`{"type":"","data":{}}`), true)
	f.Add("", "", "", []byte(`{}`), true)
	f.Add("msg_seed_5", "not-a-number", "v1,", []byte("\xff\xfe"), false)
	f.Add("msg_seed_6", "", "", []byte(`{"type":"user.created","data":[1]}`), true)
	f.Add("msg_seed_7", "", "", []byte("{\"type\":\"a\",\"data\":{\"k\":\"\\u0000\"}}"), true)
	// Values a database column refuses: they must be a 400, never a 500.
	f.Add("msg_\xff", "", "", created, true)
	f.Add("msg_seed_8", "", "", []byte("{\"type\":\"a\\u0000b\",\"data\":{}}"), true)
	f.Add("msg_seed_9", "", "", []byte("{\"type\":\"user.created\",\"data\":{\"id\":\"user_\\u0000\"}}"), true)
	f.Add("msg_seed_10", "", "", []byte(`{"type":"user.created","timestamp":253402300800000,"data":{"id":"user_1"}}`), true)
	f.Add("msg_seed_11", "", "", []byte(`{"type":"user.created","data":{"id":"user_`+strings.Repeat("x", 4000)+`"}}`), true)
	f.Add("msg_seed_12", "", "", []byte(`{"type":"subscription.created","timestamp":1716883200,"data":{"payer":{"user_id":"user_p"}}}`), true)

	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte, sign bool) {
		req := httptest.NewRequest(http.MethodPost, "/api/webhooks/clerk", bytes.NewReader(body))
		if sign {
			for k, vs := range signer.Headers(id, now, body) {
				req.Header[k] = vs
			}
		} else {
			req.Header["Svix-Id"] = []string{id}
			req.Header["Svix-Timestamp"] = []string{ts}
			req.Header["Svix-Signature"] = []string{sig}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		_, delErr := domain.NewDelivery(id, now.Unix(), "", body)
		valid := sign && len(body) <= domain.MaxBodyBytes && delErr == nil
		switch {
		case valid && rec.Code != http.StatusOK:
			t.Fatalf("validly signed envelope answered %d: %s", rec.Code, rec.Body)
		case !valid && rec.Code/100 == 2:
			t.Fatalf("answered %d to an invalid delivery (sign=%v id=%q)", rec.Code, sign, id)
		case rec.Code >= 500:
			t.Fatalf("answered %d: %s", rec.Code, rec.Body)
		}
	})
}
