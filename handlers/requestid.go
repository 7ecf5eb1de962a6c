package handlers

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/netip"
)

// requestIDHeader carries the request id, in and out.
const requestIDHeader = "X-Request-Id"

// maxRequestIDLen bounds an incoming request id.
const maxRequestIDLen = 128

type requestIDKey struct{}

// RequestID returns the request id requestID put in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// validRequestID reports whether id is a request id we keep as sent:
// 1 to maxRequestIDLen characters of A-Z a-z 0-9 and - _ . : (nothing that
// could forge a log line or a header).
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// requestID returns middleware that gives every request an id: the incoming
// X-Request-Id when it comes from a trusted proxy (trusted: see clientIPs)
// and is valid (see validRequestID), else a new random one, so a client
// cannot give its request another request's id. The id is set on the
// response's X-Request-Id header and in the request context, where the
// logger of withRequestID adds it to every log line written with that
// context.
func requestID(trusted []netip.Prefix) func(http.Handler) http.Handler {
	proxies := clientIPs{trusted: trusted}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get(requestIDHeader)
			if !validRequestID(id) || !proxies.peerTrusted(r) {
				id = rand.Text()
			}
			w.Header().Set(requestIDHeader, id)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
		})
	}
}

// withRequestID returns h adding request_id to every record logged with a
// context that carries one (the *Context logging methods).
func withRequestID(h slog.Handler) slog.Handler { return requestIDLogHandler{h} }

type requestIDLogHandler struct{ slog.Handler }

func (h requestIDLogHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := RequestID(ctx); id != "" {
		rec.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h requestIDLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDLogHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDLogHandler) WithGroup(name string) slog.Handler {
	return requestIDLogHandler{h.Handler.WithGroup(name)}
}
