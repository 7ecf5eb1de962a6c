package clerksession

import (
	"context"
	"testing"
	"time"
)

// A dev token is verified by the Verifier its Dev configures, and refused
// once past its TTL (as ErrExpired), like a real Clerk token.
func TestDevTokenExpires(t *testing.T) {
	d, err := NewDev(DevConfig{Addr: "127.0.0.1:4321"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(d.Config())
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := d.Mint("user_1", d.Origins()[0])
	if err != nil {
		t.Fatal(err)
	}
	s, err := v.Verify(context.Background(), tok)
	if err != nil || s.UserID != "user_1" || s.SessionID == "" {
		t.Fatalf("fresh dev token: %+v, %v", s, err)
	}
	later := *d
	later.now = func() time.Time { return time.Now().Add(-time.Hour) }
	old, _, err := later.Mint("user_1", d.Origins()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), old); err != ErrExpired {
		t.Fatalf("dev token past its TTL: %v, want ErrExpired", err)
	}
}
