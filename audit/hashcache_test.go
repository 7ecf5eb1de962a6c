package audit

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestHashCacheKeepsTheUpperTreeOnly(t *testing.T) {
	hashOf := func(idx int64) tlog.Hash { return tlog.RecordHash([]byte{byte(idx), byte(idx >> 8), byte(idx >> 16)}) }
	var calls [][]int64
	miss := func(ix []int64) ([]tlog.Hash, error) {
		calls = append(calls, slices.Clone(ix))
		out := make([]tlog.Hash, len(ix))
		for i, x := range ix {
			out[i] = hashOf(x)
		}
		return out, nil
	}
	low, high := tlog.StoredHashIndex(cacheLevel-1, 5), tlog.StoredHashIndex(cacheLevel, 3)
	top := tlog.StoredHashIndex(cacheLevel+4, 0)
	var c hashCache
	check := func(ix []int64, wantMiss []int64) {
		t.Helper()
		calls = nil
		got, err := c.read(ix, miss)
		if err != nil {
			t.Fatal(err)
		}
		for i, x := range ix {
			if got[i] != hashOf(x) {
				t.Fatalf("hash %d: wrong", x)
			}
		}
		if len(calls) != 1 || !slices.Equal(calls[0], wantMiss) {
			t.Fatalf("read %v: miss called with %v, want once with %v", ix, calls, wantMiss)
		}
	}
	check([]int64{low, high, top}, []int64{low, high, top})
	check([]int64{top, low, high}, []int64{low}) // only the level below cacheLevel is read again
	check([]int64{high, top}, nil)               // still called: the read is recorded
	// An error is returned and nothing is cached.
	boom := errors.New("down")
	other := tlog.StoredHashIndex(cacheLevel, 9)
	if _, err := c.read([]int64{other}, func([]int64) ([]tlog.Hash, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("error: %v", err)
	}
	check([]int64{other}, []int64{other})
	// At most maxCached are kept.
	var many []int64
	for n := range int64(maxCached + 10) {
		many = append(many, tlog.StoredHashIndex(cacheLevel, 100+n))
	}
	if _, err := c.read(many, miss); err != nil {
		t.Fatal(err)
	}
	if len(c.m) != maxCached {
		t.Fatalf("%d cached, want at most %d", len(c.m), maxCached)
	}
}
