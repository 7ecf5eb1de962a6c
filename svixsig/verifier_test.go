package svixsig

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/clerkgen"
	"github.com/clerk-ledger/clerk-ledger/domain"
	svix "github.com/svix/svix-webhooks/go"
)

// Issue 11, item 2: a signing secret that is empty, not base64 or shorter
// than 16 bytes is refused, naming the setting and the entry by position,
// never printing the secret; a verifier with a good secret refuses what an
// empty key signs.
func TestNewVerifierRefusesWeakSecrets(t *testing.T) {
	good := clerkgen.NewSecret()
	for _, c := range []struct {
		secrets []string
		want    string
	}{
		{nil, "CLERK_WEBHOOK_SIGNING_SECRET is not set"},
		{[]string{"whsec_"}, "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed"},
		{[]string{good, "whsec_"}, "CLERK_WEBHOOK_SIGNING_SECRET #2 is malformed"},
		{[]string{"whsec_c2hvcnQ="}, "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed: its key is 5 bytes"},
		{[]string{good, "whsec_!!!notbase64"}, "CLERK_WEBHOOK_SIGNING_SECRET #2 is malformed: not base64"},
		{[]string{"sk_live_123"}, "CLERK_WEBHOOK_SIGNING_SECRET #1 is malformed: it must start with whsec_"},
	} {
		_, err := NewVerifier(c.secrets)
		if err == nil || !strings.Contains(err.Error(), c.want) || domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("%d secrets: err %v, want %q", len(c.secrets), err, c.want)
			continue
		}
		if strings.Contains(err.Error(), good[6:]) || strings.Contains(err.Error(), "c2hvcnQ") {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	v, err := NewVerifier([]string{good})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := svix.NewWebhook("whsec_")
	if err != nil {
		t.Fatal(err) // svix-webhooks accepts it: an empty HMAC key
	}
	body := []byte(`{"type":"user.created","object":"event","data":{"id":"user_forged"}}`)
	now := time.Now()
	sig, _ := empty.Sign("msg_forged", now, body)
	h := http.Header{"Svix-Id": {"msg_forged"}, "Svix-Timestamp": {strconv.FormatInt(now.Unix(), 10)}, "Svix-Signature": {sig}}
	if err := v.Verify(body, h, now); domain.ErrorCode(err) != domain.EUNAUTHORIZED {
		t.Errorf("a delivery signed with an empty key: %v, want EUNAUTHORIZED", err)
	}
}

// The Verifier computes Svix's signature itself: it must accept exactly
// what svix-webhooks accepts, for signatures svix-webhooks makes, under
// rotation lists and with the webhook-* header names.
func TestVerifierAgreesWithSvix(t *testing.T) {
	secrets := []string{clerkgen.NewSecret(), clerkgen.NewSecret()}
	v, err := NewVerifier(secrets)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body := []byte(`{"type":"user.created","object":"event","data":{"id":"user_agree"}}`)
	other, _ := svix.NewWebhook(clerkgen.NewSecret())
	for i, secret := range secrets {
		wh, _ := svix.NewWebhook(secret)
		for _, tc := range []struct {
			name string
			edit func(h http.Header)
			body []byte
		}{
			{"as signed", func(http.Header) {}, body},
			{"rotation list, ours last", func(h http.Header) {
				o, _ := other.Sign("msg_agree", now, body)
				h.Set("svix-signature", o+" "+h.Get("svix-signature"))
			}, body},
			{"unknown version first", func(h http.Header) { h.Set("svix-signature", "v1a,AAAA "+h.Get("svix-signature")) }, body},
			{"webhook-* names", func(h http.Header) {
				for _, k := range []string{"id", "timestamp", "signature"} {
					h.Set("webhook-"+k, h.Get("svix-"+k))
					h.Del("svix-" + k)
				}
			}, body},
			{"another body", func(http.Header) {}, append([]byte(" "), body...)},
			{"another id", func(h http.Header) { h.Set("svix-id", "msg_other") }, body},
			{"another second", func(h http.Header) { h.Set("svix-timestamp", strconv.FormatInt(now.Unix()+1, 10)) }, body},
			{"only another secret's", func(h http.Header) { o, _ := other.Sign("msg_agree", now, body); h.Set("svix-signature", o) }, body},
		} {
			sig, _ := wh.Sign("msg_agree", now, body)
			h := http.Header{}
			h.Set("svix-id", "msg_agree")
			h.Set("svix-timestamp", strconv.FormatInt(now.Unix(), 10))
			h.Set("svix-signature", sig)
			tc.edit(h)
			theirs := wh.Verify(tc.body, h) == nil
			ours := v.Verify(tc.body, h, now) == nil
			lenient := v.VerifyIgnoringTimestamp(tc.body, h) == nil
			if ours != theirs || lenient != theirs {
				t.Errorf("secret %d, %s: svix says %v, Verify %v, VerifyIgnoringTimestamp %v", i, tc.name, theirs, ours, lenient)
			}
		}
	}
}
