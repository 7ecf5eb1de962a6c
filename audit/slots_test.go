package audit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestAuditSlots: reads hold slots until they give them back; a read that
// finds none free within the wait is refused as EUNAVAILABLE (503 +
// Retry-After), one whose request ends first gets the request's error; a
// verification takes at most half the slots (plus its snapshot's).
func TestSlots(t *testing.T) {
	ctx := context.Background()
	s := newSlots(4, 20*time.Millisecond)
	var releases []func()
	for range 4 {
		r, err := s.acquire(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := s.acquire(ctx, 1); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Fatalf("a fifth read: %v, want EUNAVAILABLE", err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.acquire(gone, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("a read whose request ended: %v", err)
	}
	releases[0]()
	r, err := s.acquire(ctx, 1)
	if err != nil {
		t.Fatalf("a read after one gave its slot back: %v", err)
	}
	r()
	for _, r := range releases[1:] {
		r()
	}
	// A weight above the size is capped: it waits for all, never forever.
	all, err := s.acquire(ctx, 99)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.acquire(ctx, 1); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("a read while one holds all: %v", err)
	}
	all()
	for _, c := range []struct {
		size         int
		parts, limit int
	}{{1, 1, 1}, {2, 1, 1}, {3, 1, 1}, {8, 4, 5}, {32, 16, 17}} {
		parts, weight := newSlots(c.size, time.Second).verifyParts()
		if parts > c.parts || weight > int64(c.limit) || (parts == 1) != (weight == 1) || (parts > 1 && weight != int64(parts)+1) {
			t.Errorf("%d slots: %d parts on %d connections, want at most %d on %d", c.size, parts, weight, c.parts, c.limit)
		}
	}
}
