package userkeys

import (
	"fmt"
	"testing"
)

// TestFullCacheEvictsOneKey: once the cache holds maxCached keys, a new
// user's key makes room by dropping one entry, not the whole cache: every
// other key stays cached (a rebuild over more users than the cache holds
// keeps hitting it).
func TestFullCacheEvictsOneKey(t *testing.T) {
	master, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	k, err := Load(master)
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxCached + 1 {
		user := fmt.Sprintf("user_%05d", i)
		w, err := k.NewDataKey(user)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := k.Seal(user, w, "msg_1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	cached := 0
	for i := range maxCached + 1 {
		if k.CachedKey(fmt.Sprintf("user_%05d", i)) != nil {
			cached++
		}
	}
	if cached != maxCached {
		t.Fatalf("%d keys cached after %d users, want %d", cached, maxCached+1, maxCached)
	}
}
