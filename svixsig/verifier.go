// Package svixsig verifies Svix webhook signatures (the v1 scheme Clerk's
// webhooks use: HMAC-SHA256 with the decoded whsec_ secret over
// "svix-id.svix-timestamp.body"), with several secrets during a rotation,
// checking the headers and their 5-minute tolerance before any body byte is
// read. Signing (for the CLI and tests) is clerkgen's, through svix-webhooks,
// so the two implementations check each other (TestVerifierAgreesWithSvix).
package svixsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// minSecretBytes is the shortest signing key accepted (Svix's are 24 bytes).
const minSecretBytes = 16

// Verifier checks Svix webhook signatures against one or more signing
// secrets (several during a secret rotation). It is safe for concurrent use.
//
// It computes Svix's v1 signature itself, HMAC-SHA256 with the decoded
// secret over "svix-id.svix-timestamp.body", as svix-webhooks/go does, but
// streams the body into the MAC where the library first copies it into a
// string (one body-sized allocation per secret per attempt).
type Verifier struct {
	keys [][]byte
}

// NewVerifier returns a Verifier for the given whsec_ secrets. It returns
// EINVALID naming the setting, and the entry by its position (never its
// value), when there is none or one is not "whsec_" + standard base64 of at
// least 16 bytes: "whsec_" alone would be an empty HMAC key, with which
// anyone can sign.
func NewVerifier(secrets []string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET is not set")
	}
	v := &Verifier{}
	for i, s := range secrets {
		b64, ok := strings.CutPrefix(s, "whsec_")
		switch {
		case !ok:
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: it must start with whsec_", i+1)
		case b64 == "":
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: nothing after whsec_ (an empty key would let anyone sign)", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: not base64 after whsec_", i+1)
		}
		if len(key) < minSecretBytes {
			return nil, domain.Errorf(domain.EINVALID, "CLERK_WEBHOOK_SIGNING_SECRET #%d is malformed: its key is %d bytes, want at least %d", i+1, len(key), minSecretBytes)
		}
		v.keys = append(v.keys, key)
	}
	return v, nil
}

// HeaderValues returns the delivery's id, timestamp and signature headers,
// from svix-* or, as Svix also sends them, webhook-*.
func HeaderValues(h http.Header) (id, ts, sig string) {
	id, ts, sig = h.Get("svix-id"), h.Get("svix-timestamp"), h.Get("svix-signature")
	if id == "" || ts == "" || sig == "" {
		id, ts, sig = h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	}
	return id, ts, sig
}

const svixTolerance = 5 * time.Minute

// Headers are a delivery's Svix headers, checked and parsed.
type Headers struct {
	ID        string // svix-id
	Timestamp int64  // svix-timestamp, unix seconds
	Signature string // svix-signature, as sent
	entries   []domain.SignatureEntry
}

// CheckHeaders checks a delivery's Svix headers without its body: all three
// present (EUNAUTHORIZED), svix-id per domain.CheckDeliveryID, svix-timestamp
// a unix time in seconds and svix-signature per domain.ParseSignatureHeader
// (EINVALID naming the header), and the timestamp within Svix's 5-minute
// tolerance of now (EUNAUTHORIZED).
func (v *Verifier) CheckHeaders(h http.Header, now time.Time) (Headers, error) {
	id, ts, sig := HeaderValues(h)
	if id == "" || ts == "" || sig == "" {
		return Headers{}, domain.Errorf(domain.EUNAUTHORIZED, "missing svix-id, svix-timestamp or svix-signature header")
	}
	if err := domain.CheckDeliveryID(id); err != nil {
		return Headers{}, err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Headers{}, domain.Errorf(domain.EINVALID, "svix-timestamp is not a unix timestamp in seconds")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > svixTolerance || d < -svixTolerance {
		return Headers{}, domain.Errorf(domain.EUNAUTHORIZED, "svix-timestamp is outside the 5 minute tolerance")
	}
	entries, err := domain.ParseSignatureHeader(sig)
	if err != nil {
		return Headers{}, err
	}
	return Headers{ID: id, Timestamp: sec, Signature: sig, entries: entries}, nil
}

// Verify checks body against the Svix headers in h with every secret, with
// Svix's 5-minute timestamp tolerance against now: CheckHeaders, then the
// signature. It returns EUNAUTHORIZED saying what is wrong when no secret
// matches, EINVALID when a header is malformed.
func (v *Verifier) Verify(body []byte, h http.Header, now time.Time) error {
	dh, err := v.CheckHeaders(h, now)
	if err != nil {
		return err
	}
	return v.VerifyBody(dh, body)
}

// VerifyBody reports EUNAUTHORIZED unless a v1 entry of dh (from
// CheckHeaders) is the signature of body by one of the secrets. A caller
// checks the headers first and reads the body only when they pass.
func (v *Verifier) VerifyBody(dh Headers, body []byte) error {
	var want [44]byte // base64 of 32 bytes
	for _, key := range v.keys {
		sign(key, dh.ID, dh.Timestamp, body, want[:])
		for _, e := range dh.entries {
			if e.Version == "v1" && hmac.Equal([]byte(e.Value), want[:]) {
				return nil
			}
		}
	}
	return domain.Errorf(domain.EUNAUTHORIZED, "no valid signature for this body")
}

// sign writes into out (44 bytes) the base64 of Svix's v1 signature:
// HMAC-SHA256(key, id + "." + decimal timestamp + "." + body).
func sign(key []byte, id string, timestamp int64, body []byte, out []byte) {
	mac := hmac.New(sha256.New, key)
	var prefix [64]byte
	p := append(prefix[:0], '.')
	p = strconv.AppendInt(p, timestamp, 10)
	p = append(p, '.')
	io.WriteString(mac, id)
	mac.Write(p)
	mac.Write(body)
	var sum [sha256.Size]byte
	base64.StdEncoding.Encode(out, mac.Sum(sum[:0]))
}

// VerifyIgnoringTimestamp checks the signature with every secret but not its
// age: for re-checking stored deliveries. It reads the headers as leniently
// as Svix's own verifier (entries that are not v1 or not well formed are
// skipped). It returns EUNAUTHORIZED when no secret matches.
func (v *Verifier) VerifyIgnoringTimestamp(body []byte, h http.Header) error {
	id, ts, sig := HeaderValues(h)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || sig == "" || err != nil {
		return domain.Errorf(domain.EUNAUTHORIZED, "missing or malformed svix-id, svix-timestamp or svix-signature")
	}
	dh := Headers{ID: id, Timestamp: sec}
	for _, f := range strings.Split(sig, " ") {
		if version, value, ok := strings.Cut(f, ","); ok && version == "v1" {
			dh.entries = append(dh.entries, domain.SignatureEntry{Version: version, Value: value})
		}
	}
	return v.VerifyBody(dh, body)
}
