package handlers

import (
	"context"
)

// Session is the signed-in person behind a request, from a verified Clerk
// session token.
type Session struct {
	UserID    string // sub
	SessionID string // sid
}

type sessionKey struct{}

// withSession returns ctx carrying s.
func withSession(ctx context.Context, s Session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// sessionFrom returns the request's verified session, if any.
func sessionFrom(ctx context.Context) (Session, bool) {
	s, ok := ctx.Value(sessionKey{}).(Session)
	return s, ok && s.UserID != ""
}
