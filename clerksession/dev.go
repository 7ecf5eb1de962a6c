package clerksession

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// DevIssuer is the iss of dev sign-in tokens. It matches Clerk's issuer
// pattern (https://clerk.<domain>) so the same verification accepts it; the
// .invalid TLD can never be a real Clerk instance.
const DevIssuer = "https://clerk.ledger-dev.invalid"

// DevConfig configures NewDev.
type DevConfig struct {
	// Addr is the address the server actually listens on (host:port). It
	// must be a loopback address.
	Addr string
	// The Clerk settings: any of them set refuses the dev sign-in, so a
	// server with real Clerk keys can never mint its own sessions.
	ClerkSecretKey, ClerkJWTKey, PublishableKey string
	// TTL is how long a dev session token lives; default 10 min.
	TTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Dev is the development sign-in for `ledger dev` without a Clerk
// account: it signs people in as a projected user with short-lived RS256
// session tokens from a key made for this process only, shaped like Clerk's
// and verified by the same Verifier code path as real tokens (build it
// from Config). It is safe for concurrent use.
type Dev struct {
	key     *rsa.PrivateKey
	kid     string
	origins []string
	ttl     time.Duration
	now     func() time.Time
}

// NewDev returns a Dev with a new per-process key. It refuses
// (EINVALID, saying why) when any real Clerk key is configured or when Addr
// is not a loopback address.
func NewDev(c DevConfig) (*Dev, error) {
	if c.ClerkSecretKey != "" || c.ClerkJWTKey != "" || c.PublishableKey != "" {
		return nil, domain.Errorf(domain.EINVALID, "dev sign-in refused: real Clerk keys are configured (CLERK_SECRET_KEY, CLERK_JWT_KEY or PUBLIC_CLERK_PUBLISHABLE_KEY); sign in with Clerk instead")
	}
	if !IsLoopbackAddr(c.Addr) {
		return nil, domain.Errorf(domain.EINVALID, "dev sign-in refused: the server listens on %q, not a loopback address (use localhost:PORT)", c.Addr)
	}
	origins, err := DefaultAuthorizedParties(c.Addr)
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("dev sign-in key: %w", err)
	}
	d := &Dev{key: key, kid: "ins_dev_" + strconv.FormatInt(time.Now().UnixNano(), 36), origins: origins, ttl: c.TTL, now: c.Now}
	if d.ttl <= 0 {
		d.ttl = 10 * time.Minute
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d, nil
}

// Config returns the configuration of the Verifier that accepts this
// Dev's tokens: its public key as CLERK_JWT_KEY and the
// server's loopback origins as authorized parties.
func (d *Dev) Config() Config {
	der, _ := x509.MarshalPKIXPublicKey(&d.key.PublicKey) // an RSA public key always marshals
	return Config{
		JWTKey:            string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		AuthorizedParties: d.origins,
		Now:               d.now,
	}
}

// Mint returns a session token for userID issued to origin azp (one of the
// server's origins), valid for the TTL, and its expiry.
func (d *Dev) Mint(userID, azp string) (string, time.Time, error) {
	now := d.now()
	exp := now.Add(d.ttl)
	tok, err := signRS256(d.key, d.kid, map[string]any{
		"iss": DevIssuer, "sub": userID, "sid": newSessionID(), "azp": azp,
		"iat": now.Unix(), "nbf": now.Unix() - 5, "exp": exp.Unix(), "v": 2,
	})
	return tok, exp, err
}

// signRS256 returns the compact JWS of claims signed with key (RS256).
func signRS256(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	h, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign dev session token: %w", err)
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// IsLoopbackAddr reports whether host:port names a loopback host.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultAuthorizedParties returns the origins a browser uses to reach a
// server listening on addr, the default for CLERK_AUTHORIZED_PARTIES: for a
// loopback host every spelling (http://localhost:P, http://127.0.0.1:P,
// http://[::1]:P); for a named host http://host:port (and https://host on
// port 443). Errors: EINVALID for an unspecified host (":4321",
// "0.0.0.0:4321"), whose public origin cannot be known.
func DefaultAuthorizedParties(addr string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_ADDR %q is not host:port", addr)
	}
	if IsLoopbackAddr(addr) {
		return []string{"http://localhost:" + port, "http://127.0.0.1:" + port, "http://[::1]:" + port}, nil
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return nil, domain.Errorf(domain.EINVALID, "CLERK_AUTHORIZED_PARTIES is not set and LEDGER_ADDR %q does not name the app's origin: set it to the origin(s) people open, e.g. https://ledger.example.com", addr)
	}
	if port == "443" {
		return []string{"https://" + host}, nil
	}
	return []string{"http://" + net.JoinHostPort(host, port)}, nil
}

// Sign signs arbitrary claims with the dev key (RS256, the dev key id):
// tests use it to make dev tokens that are wrong in one way. Tokens it
// makes are accepted only by this process's Verifier (Config).
func (d *Dev) Sign(claims map[string]any) (string, error) { return signRS256(d.key, d.kid, claims) }

// TTL is how long a minted token lives.
func (d *Dev) TTL() time.Duration { return d.ttl }

// Origins returns the server origins tokens are minted for (the first is
// the default azp).
func (d *Dev) Origins() []string { return append([]string(nil), d.origins...) }

// newSessionID returns a Clerk-shaped session id (sess_ and 27 random
// base-62 characters).
func newSessionID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 27)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "sess_" + string(b)
}
