package domain

import (
	"testing"
	"time"
)

// TestMsTimeKeepsOnlyTheYears0To9999: a Clerk time outside the years 0000
// to 9999 in UTC is no time (zero), its bounds are kept.
func TestMsTimeKeepsOnlyTheYears0To9999(t *testing.T) {
	for ms, want := range map[int64]time.Time{
		0:                  {},
		1716897600000:      time.Date(2024, 5, 28, 12, 0, 0, 0, time.UTC),
		maxClerkMillis:     time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC),
		maxClerkMillis + 1: {},
		minClerkMillis:     time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		minClerkMillis - 1: {},
		1 << 62:            {},
	} {
		if got := msTime(ms); !got.Equal(want) {
			t.Errorf("msTime(%d) = %v, want %v", ms, got, want)
		}
	}
}
