package handlers

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/svixsig"
	"golang.org/x/time/rate"
)

// RateLimit is a per-client token bucket: Rate requests per second on
// average, Burst at once. The zero value (Rate 0) means no limit.
type RateLimit struct {
	Rate  float64
	Burst int
}

// Enabled reports whether l limits anything.
func (l RateLimit) Enabled() bool { return l.Rate > 0 }

// String formats l as ParseRateLimit reads it ("0" when disabled).
func (l RateLimit) String() string {
	if !l.Enabled() {
		return "0"
	}
	return strconv.FormatFloat(l.Rate, 'f', -1, 64) + ":" + strconv.Itoa(l.Burst)
}

// ParseRateLimit reads "R" or "R:B": R requests per second per client
// (a decimal, may be fractional), burst B (default: R rounded up, at least
// 1). "0" (or "off") disables the limit. Errors: EINVALID naming setting.
func ParseRateLimit(setting, s string) (RateLimit, error) {
	s = strings.TrimSpace(s)
	if s == "0" || strings.EqualFold(s, "off") {
		return RateLimit{}, nil
	}
	bad := domain.Errorf(domain.EINVALID, "%s %q is malformed: want requests per second and an optional burst, e.g. 20:60, or 0 to disable", setting, s)
	rs, bs, hasBurst := strings.Cut(s, ":")
	r, err := strconv.ParseFloat(strings.TrimSpace(rs), 64)
	if err != nil || math.IsNaN(r) || math.IsInf(r, 0) || r < 0 {
		return RateLimit{}, bad
	}
	if r == 0 {
		return RateLimit{}, nil
	}
	b := int(math.Max(1, math.Ceil(r)))
	if hasBurst {
		if b, err = strconv.Atoi(strings.TrimSpace(bs)); err != nil || b < 1 {
			return RateLimit{}, bad
		}
	}
	return RateLimit{Rate: r, Burst: b}, nil
}

// ParseTrustedProxies reads the addresses of reverse proxies whose
// X-Forwarded-For header is believed (LEDGER_TRUSTED_PROXIES): IPs or CIDR
// prefixes. Errors: EINVALID naming the entry.
func ParseTrustedProxies(entries []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "LEDGER_TRUSTED_PROXIES: %q is neither an IP address nor a CIDR prefix", e)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// clientIPs finds a request's client address: the TCP peer (RemoteAddr),
// unless the peer is a trusted proxy, in which case X-Forwarded-For is read
// from the right, skipping trusted proxies, and the first untrusted address
// is the client. Forwarded-for entries a client writes itself sit left of
// the ones trusted proxies append, so they are never believed.
type clientIPs struct {
	trusted []netip.Prefix
}

func (c clientIPs) isTrusted(a netip.Addr) bool {
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerTrusted reports whether r's TCP peer is a trusted proxy.
func (c clientIPs) peerTrusted(r *http.Request) bool {
	if len(c.trusted) == 0 {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	return err == nil && c.isTrusted(peer.Unmap().WithZone(""))
}

// of returns r's client address; ok is false when RemoteAddr is not an IP
// (then the caller shares one bucket with every such request).
func (c clientIPs) of(r *http.Request) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	peer = peer.Unmap().WithZone("")
	if len(c.trusted) == 0 || !c.isTrusted(peer) {
		return peer, true
	}
	client := peer
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return client, true // garbage: stop at the last address we could trust
			}
			client = a.Unmap().WithZone("")
			if !c.isTrusted(client) {
				return client, true
			}
		}
	}
	return client, true
}

// bucketKey is what shares a bucket: one IPv4 address, or one IPv6 /64
// (what a single subscriber is usually given).
func bucketKey(a netip.Addr, ok bool) netip.Prefix {
	if !ok {
		return netip.Prefix{}
	}
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// ipLimiter holds one token bucket per client (bucketKey), at most max of
// them. Buckets idle for longer than idle (by which time they have refilled,
// so forgetting them changes nothing) are swept inline, at most once per
// idle/2. When the table is full anyway, new clients share one overflow
// bucket until a sweep makes room: memory and the work per request stay
// bounded whatever the number of addresses, and no throttled client is
// evicted to come back with a full burst. No goroutine. Safe for
// concurrent use.
type ipLimiter struct {
	limit rate.Limit
	burst int
	max   int
	idle  time.Duration

	mu        sync.Mutex
	buckets   map[netip.Prefix]*bucket
	overflow  *bucket // shared by new clients while the table is full
	lastSweep time.Time
}

type bucket struct {
	lim     *rate.Limiter
	seen    time.Time
	limited bool // the last request was refused (log once per episode)
}

// defaultMaxClients bounds the bucket table (~200 bytes a bucket).
const defaultMaxClients = 10000

func newIPLimiter(l RateLimit, max int) *ipLimiter {
	idle := time.Minute
	if refill := time.Duration(float64(l.Burst) / l.Rate * float64(time.Second)); refill > idle {
		idle = refill
	}
	return &ipLimiter{limit: rate.Limit(l.Rate), burst: l.Burst, max: max, idle: idle, buckets: map[netip.Prefix]*bucket{}}
}

// allow takes a token for key at now. When there is none it returns false,
// how long until there is one, and whether this starts a refusal episode
// for key (the previous request was allowed).
func (l *ipLimiter) allow(key netip.Prefix, now time.Time) (ok bool, wait time.Duration, first bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= l.idle/2 {
		l.sweep(now)
	}
	b := l.buckets[key]
	switch {
	case b != nil:
	case len(l.buckets) < l.max:
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	default:
		if l.overflow == nil {
			l.overflow = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		}
		b = l.overflow
	}
	b.seen = now
	if b.lim.AllowN(now, 1) {
		b.limited = false
		return true, 0, false
	}
	first = !b.limited
	b.limited = true
	missing := 1 - b.lim.TokensAt(now)
	return false, time.Duration(missing / float64(l.limit) * float64(time.Second)), first
}

func (l *ipLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.buckets {
		if now.Sub(b.seen) >= l.idle {
			delete(l.buckets, k)
		}
	}
}

// size returns the number of buckets held.
func (l *ipLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// rateLimitConfig configures rateLimit.
type rateLimitConfig struct {
	Webhook, API RateLimit
	Trusted      []netip.Prefix
	MaxClients   int // default defaultMaxClients
	Observer     DeliveryObserver
	Now          func() time.Time
}

// rateLimit returns middleware that limits requests per client address:
// those to webhookPath with cfg.Webhook, every other /api/ request with
// cfg.API (separate buckets); other paths are not limited. Over the limit
// it answers 429 (ERATELIMIT, JSON) with Retry-After in whole seconds and
// does not call next: a refused webhook delivery is not read, verified or
// stored, and Svix retries it later like any non-2xx answer. Every refused
// delivery is logged and reported to cfg.Observer as OutcomeRateLimited;
// refused API requests are logged once per client per episode.
func rateLimit(log *slog.Logger, cfg rateLimitConfig, webhookPath string) func(http.Handler) http.Handler {
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = defaultMaxClients
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var hook, api *ipLimiter
	if cfg.Webhook.Enabled() {
		hook = newIPLimiter(cfg.Webhook, cfg.MaxClients)
	}
	if cfg.API.Enabled() {
		api = newIPLimiter(cfg.API, cfg.MaxClients)
	}
	ips := clientIPs{trusted: cfg.Trusted}
	return func(next http.Handler) http.Handler {
		if hook == nil && api == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			lim, isHook := api, false
			switch {
			case r.URL.Path == webhookPath:
				lim, isHook = hook, true
			case !strings.HasPrefix(r.URL.Path, "/api/"):
				lim = nil
			}
			if lim == nil {
				next.ServeHTTP(w, r)
				return
			}
			ip, ok := ips.of(r)
			allowed, wait, first := lim.allow(bucketKey(ip, ok), cfg.Now())
			if allowed {
				next.ServeHTTP(w, r)
				return
			}
			secs := int(math.Ceil(wait.Seconds()))
			if secs < 1 {
				secs = 1
			}
			switch {
			case isHook:
				// Every refused delivery is logged, like every other
				// delivery outcome, and counted: Svix retries it.
				if cfg.Observer != nil {
					cfg.Observer.ObserveDelivery(OutcomeRateLimited, "", 0)
				}
				id, _, _ := svixsig.HeaderValues(r.Header)
				log.WarnContext(r.Context(), "webhook delivery", "delivery_id", truncate(id, 64), "outcome", OutcomeRateLimited,
					"status", http.StatusTooManyRequests, "client_ip", ip.String(), "retry_after_s", secs)
			case first:
				log.WarnContext(r.Context(), "rate limited", "path", r.URL.Path, "client_ip", ip.String(), "retry_after_s", secs)
			}
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, r, log, domain.Errorf(domain.ERATELIMIT, "too many requests from your address: retry in %d s", secs))
		})
	}
}
