package userkeys

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// TestFullCacheEvictsOneKey: once the keyring holds maxCached ciphers, a
// new user's key makes room by dropping one cipher, not all of them, and
// the dropped user's key stays among the unwrapped ones (maxDEKs): it
// still seals without the database. Past maxDEKs one of those goes.
func TestFullCacheEvictsOneKey(t *testing.T) {
	k := newKeyring(t)
	users := maxCached + 1
	wrapped := make([][]byte, users)
	for i := range users {
		user := fmt.Sprintf("user_%05d", i)
		w, err := k.NewDataKey(user)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := k.Seal(user, w, "msg_1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		wrapped[i] = w
	}
	if len(k.cache) != maxCached {
		t.Fatalf("%d ciphers kept after %d users, want %d", len(k.cache), users, maxCached)
	}
	for i := range users {
		user := fmt.Sprintf("user_%05d", i)
		if w := k.CachedKey(user); string(w) != string(wrapped[i]) {
			t.Fatalf("%s: the key left the keyring with its cipher", user)
		}
		if _, _, ok, err := k.SealCached(user, "msg_2", []byte(`{}`)); !ok || err != nil {
			t.Fatalf("%s: no seal from the kept key: ok=%v err=%v", user, ok, err)
		}
	}
	k.mu.Lock()
	for i := len(k.deks); i < maxDEKs; i++ {
		k.deks[fmt.Sprintf("user_x%06d", i)] = dekEntry{wrapped: "w", at: time.Now()}
	}
	k.mu.Unlock()
	w, err := k.NewDataKey("user_last")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.Seal("user_last", w, "msg_1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if len(k.deks) != maxDEKs || k.CachedKey("user_last") == nil {
		t.Fatalf("%d unwrapped keys kept past maxDEKs (%d), the new one kept %v", len(k.deks), maxDEKs, k.CachedKey("user_last") != nil)
	}
}

// TestOpenerChecksEachWrappedKey: an Opener reuses a user's data key only
// while each body comes with the wrapped key it was unwrapped from: a nil
// wrapped key (destroyed) is erased and drops the key from the Opener and
// the keyring, and a changed one is unwrapped again (refused if it does
// not open), never answered from what the Opener holds.
func TestOpenerChecksEachWrappedKey(t *testing.T) {
	k, w, sealed, _ := sealedOne(t)
	o := k.Opener()
	if _, body, erased, err := o.Open("user_1", w, "msg_1", sealed); err != nil || erased || string(body) != `{"a":1}` {
		t.Fatalf("open: %q erased=%v err=%v", body, erased, err)
	}
	other, err := k.NewDataKey("user_1") // the row changed under the Opener
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := o.Open("user_1", other, "msg_1", sealed); err == nil {
		t.Fatal("a body opened under a wrapped key it was not sealed with")
	}
	bad := append([]byte(nil), w...)
	bad[len(bad)-1] ^= 1
	if _, _, _, err := o.Open("user_1", bad, "msg_1", sealed); err == nil {
		t.Fatal("a tampered wrapped key opened a body")
	}
	if _, body, erased, err := o.Open("user_1", nil, "msg_1", sealed); err != nil || !erased || body != nil {
		t.Fatalf("destroyed key: %q erased=%v err=%v", body, erased, err)
	}
	if _, ok := o.keys["user_1"]; ok {
		t.Fatal("the Opener kept a destroyed user's key")
	}
	if k.CachedKey("user_1") != nil {
		t.Fatal("the keyring kept a destroyed user's key")
	}
	if _, _, erased, err := o.Open("user_1", w, "msg_1", Discarded); err != nil || !erased {
		t.Fatalf("discarded body: erased=%v err=%v", erased, err)
	}
	if k.Opener() != nil && (*Keyring)(nil).Opener() != nil {
		t.Fatal("a nil keyring has an Opener")
	}
}

// TestPendingOpensWhatSealWrote: Prepare then Pending.Open is Open in two
// halves: the exact body, erased for a destroyed key, and an error for a
// changed ciphertext or delivery id; Prepare keeps nothing of the sealed
// bytes it was given.
func TestPendingOpensWhatSealWrote(t *testing.T) {
	k, w, sealed, c := sealedOne(t)
	o := k.Opener()
	in := append([]byte(nil), sealed...)
	p, erased, err := o.Prepare("user_1", w, "msg_1", in)
	if err != nil || erased {
		t.Fatalf("prepare: erased=%v err=%v", erased, err)
	}
	clear(in) // the driver's buffer, reused
	salt, body, _, err := p.Open(nil)
	if err != nil || string(body) != `{"a":1}` || domain.BodyCommitment(salt, body) != c {
		t.Fatalf("open: %q err=%v", body, err)
	}
	if _, erased, err := o.Prepare("user_1", nil, "msg_1", sealed); err != nil || !erased {
		t.Fatalf("destroyed key: erased=%v err=%v", erased, err)
	}
	bad := append([]byte(nil), sealed...)
	bad[len(bad)-1] ^= 1
	if p, _, err := o.Prepare("user_1", w, "msg_1", bad); err != nil {
		t.Fatal(err)
	} else if _, _, _, err := p.Open(nil); err == nil {
		t.Fatal("a changed ciphertext opened")
	}
	if p, _, err := o.Prepare("user_1", w, "msg_2", sealed); err != nil {
		t.Fatal(err)
	} else if _, _, _, err := p.Open(nil); err == nil {
		t.Fatal("a body opened as another delivery's")
	}
}

// TestDeferredOpensInItsUsersSlot: Keyring.Defer then Pending.OpenIn is
// Open with the key kept in the caller's Slot: the exact body; Defer keeps
// nothing of the driver's buffer; a slot given no key (Hold) opens the
// body as erased; the slot unwraps its key once and serves the user's next
// body without an unwrap; Hold replaces the key (a rotated row opens the
// same bodies, another key opens none); a tampered or missized key, a
// changed ciphertext, a truncated body and an unknown format are errors;
// a discarded body is erased; a deferred Pending does not open without
// its slot.
func TestDeferredOpensInItsUsersSlot(t *testing.T) {
	k, w, sealed, c := sealedOne(t)
	in := append([]byte(nil), sealed...)
	p, erased, err := k.Defer("user_1", "msg_1", in)
	if err != nil || erased {
		t.Fatalf("defer: erased=%v err=%v", erased, err)
	}
	clear(in) // the driver's buffer, reused
	if _, _, _, err := p.Open(nil); err == nil {
		t.Fatal("a deferred body opened without its slot")
	}
	var slot Slot
	if _, body, _, erased, err := p.OpenIn(&slot, nil); err != nil || !erased || body != nil {
		t.Fatalf("a slot given no key: erased=%v body %q err=%v", erased, body, err)
	}
	if err := slot.Hold(w); err != nil {
		t.Fatal(err)
	}
	salt, body, _, erased, err := p.OpenIn(&slot, nil)
	if err != nil || erased || string(body) != `{"a":1}` || domain.BodyCommitment(salt, body) != c {
		t.Fatalf("open: %q erased=%v err=%v", body, erased, err)
	}
	if slot.state != slotOpen || slot.wrapped != [wrappedSize]byte(w) {
		t.Fatal("the slot did not keep the key it unwrapped")
	}
	// The next body of the user opens from the slot without an unwrap
	// (here: with a keyring that could not unwrap it).
	second, _, err := k.Seal("user_1", w, "msg_2", []byte(`{"b":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if p, _, err = newKeyring(t).Defer("user_1", "msg_2", second); err != nil {
		t.Fatal(err)
	}
	if _, body, _, _, err := p.OpenIn(&slot, nil); err != nil || string(body) != `{"b":2}` {
		t.Fatalf("second body from the slot: %q err=%v", body, err)
	}
	// The same key wrapped anew (a rotation) opens the same bodies.
	rotated, err := k.Rewrap("user_1", w, k)
	if err != nil {
		t.Fatal(err)
	}
	open := func(wrapped, sealed []byte) ([]byte, error) {
		t.Helper()
		var s Slot
		if err := s.Hold(wrapped); err != nil {
			return nil, err
		}
		p, _, err := k.Defer("user_1", "msg_1", sealed)
		if err != nil {
			t.Fatal(err)
		}
		_, body, _, _, err := p.OpenIn(&s, nil)
		return body, err
	}
	if body, err := open(rotated, sealed); err != nil || string(body) != `{"a":1}` {
		t.Fatalf("after a rotation: %q err=%v", body, err)
	}
	other, err := k.NewDataKey("user_1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(other, sealed); err == nil {
		t.Fatal("a body opened under a wrapped key it was not sealed with")
	}
	bad := append([]byte(nil), w...)
	bad[len(bad)-1] ^= 1
	if _, err := open(bad, sealed); err == nil {
		t.Fatal("a tampered wrapped key opened a body")
	}
	if _, err := open(w[:len(w)-1], sealed); err == nil {
		t.Fatal("a slot held a wrapped key of the wrong size")
	}
	badBody := append([]byte(nil), sealed...)
	badBody[len(badBody)-1] ^= 1
	if _, err := open(w, badBody); err == nil {
		t.Fatal("a changed ciphertext opened")
	}
	if _, erased, err := k.Defer("user_1", "msg_1", Discarded); err != nil || !erased {
		t.Fatalf("discarded body: erased=%v err=%v", erased, err)
	}
	if _, _, err := k.Defer("user_1", "msg_1", sealed[:Overhead-1]); err == nil {
		t.Fatal("a truncated body was deferred")
	}
	if _, _, err := k.Defer("user_1", "msg_1", []byte{9, 1, 2}); err == nil {
		t.Fatal("a body of an unknown format was deferred")
	}
}

// newKeyring returns a keyring of a fresh master key.
func newKeyring(t testing.TB) *Keyring {
	t.Helper()
	return newKeyrings(t, 1)[0]
}

// newKeyrings returns n keyrings of one new master key: n processes of one
// ledger, each with its own cache.
func newKeyrings(t testing.TB, n int) []*Keyring {
	t.Helper()
	master, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*Keyring, n)
	for i := range out {
		if out[i], err = Load(master); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// sealedOne returns a fresh keyring, user_1's wrapped data key, and the
// body {"a":1} of delivery msg_1 sealed under it with its commitment.
func sealedOne(t *testing.T) (k *Keyring, wrapped, sealed []byte, commitment [domain.HashSize]byte) {
	t.Helper()
	k = newKeyring(t)
	wrapped, err := k.NewDataKey("user_1")
	if err != nil {
		t.Fatal(err)
	}
	sealed, commitment, err = k.Seal("user_1", wrapped, "msg_1", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	return k, wrapped, sealed, commitment
}

// TestSealCachedSealsOnlyFreshKeys: SealCached seals what Open opens (the
// exact body, its commitment, a fresh salt and nonce each time) only while
// the user's key was read less than SealTTL ago; an older, forgotten or
// never-read key seals nothing and says so.
func TestSealCachedSealsOnlyFreshKeys(t *testing.T) {
	k := newKeyring(t)
	if s, _, ok, err := k.SealCached("user_1", "msg_1", []byte(`{}`)); ok || err != nil || s != nil {
		t.Fatalf("no key read yet: sealed=%v ok=%v err=%v", s != nil, ok, err)
	}
	k, w, _, _ := sealedOne(t) // Seal reads the key into the cache
	body := []byte(`{"email":"a@example.com"}`)
	s1, c1, ok, err := k.SealCached("user_1", "msg_2", body)
	if err != nil || !ok {
		t.Fatalf("fresh key: ok=%v err=%v", ok, err)
	}
	s2, c2, _, _ := k.SealCached("user_1", "msg_2", body)
	if len(s1) != len(body)+Overhead || string(s1) == string(s2) || c1 == c2 {
		t.Fatalf("sealed %d bytes (want %d), same bytes twice %v, same commitment twice %v", len(s1), len(body)+Overhead, string(s1) == string(s2), c1 == c2)
	}
	salt, got, erased, err := k.Opener().Open("user_1", w, "msg_2", s1)
	if err != nil || erased || string(got) != string(body) || domain.BodyCommitment(salt, got) != c1 {
		t.Fatalf("open: %q erased=%v err=%v", got, erased, err)
	}
	if _, _, _, err := k.Open("user_1", w, "msg_3", s1); err == nil {
		t.Fatal("a body opened as another delivery's")
	}
	k.mu.Lock()
	d := k.deks["user_1"]
	d.at = d.at.Add(-SealTTL)
	k.deks["user_1"] = d
	k.mu.Unlock()
	if s, _, ok, err := k.SealCached("user_1", "msg_4", body); ok || err != nil || s != nil {
		t.Fatalf("key read SealTTL ago: sealed=%v ok=%v err=%v", s != nil, ok, err)
	}
	if k.CachedKey("user_1") != nil {
		t.Fatal("the stale key stayed cached")
	}
	if _, _, err := k.Seal("user_1", w, "msg_5", body); err != nil {
		t.Fatal(err)
	}
	k.Forget("user_1")
	if _, _, ok, _ := k.SealCached("user_1", "msg_6", body); ok {
		t.Fatal("a forgotten key sealed")
	}
}

// TestFullOpenerOpensPastItsKeys: an Opener holding maxOpenerKeys keys
// opens a body of another user with a key unwrapped for that body alone:
// the exact body, a tampered or changed wrapped key refused, and nothing
// added to the keyring's cache (a bulk read does not churn it).
func TestFullOpenerOpensPastItsKeys(t *testing.T) {
	k, w, sealed, c := sealedOne(t)
	k.Forget("user_1")
	o := k.Opener()
	for i := range maxOpenerKeys {
		o.keys[fmt.Sprintf("user_x%06d", i)] = cached{wrapped: "w"}
	}
	for range 2 {
		salt, body, erased, err := o.Open("user_1", w, "msg_1", sealed)
		if err != nil || erased || string(body) != `{"a":1}` || domain.BodyCommitment(salt, body) != c {
			t.Fatalf("open past a full Opener: %q erased=%v err=%v", body, erased, err)
		}
	}
	if _, ok := o.keys["user_1"]; ok || len(o.keys) != maxOpenerKeys {
		t.Fatalf("a full Opener kept another key (%d held)", len(o.keys))
	}
	if k.CachedKey("user_1") != nil {
		t.Fatal("a full Opener's read filled the keyring's cache")
	}
	bad := append([]byte(nil), w...)
	bad[len(bad)-1] ^= 1
	if _, _, _, err := o.Open("user_1", bad, "msg_1", sealed); err == nil {
		t.Fatal("a tampered wrapped key opened a body past a full Opener")
	}
	other, err := k.NewDataKey("user_1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := o.Open("user_1", other, "msg_1", sealed); err == nil {
		t.Fatal("a body opened under a wrapped key it was not sealed with")
	}
}

// TestForgetWinsOverAPromotion: a key kept without its cipher that is
// forgotten (an erasure in this process) while SealCached makes its cipher
// is not put back: the cipher is not kept, and the user's key seals
// nothing more.
func TestForgetWinsOverAPromotion(t *testing.T) {
	k, _, _, _ := sealedOne(t)
	k.mu.Lock()
	d := k.deks["user_1"]
	delete(k.cache, "user_1") // the cipher evicted, the key kept
	forgets := k.forgets
	k.mu.Unlock()
	k.Forget("user_1") // between fresh's look-up and its ready
	if _, err := k.ready("user_1", d, true, forgets); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.cache["user_1"]; ok || k.CachedKey("user_1") != nil {
		t.Fatal("a forgotten key was put back by the cipher made for it")
	}
	if _, _, ok, _ := k.SealCached("user_1", "msg_2", []byte(`{}`)); ok {
		t.Fatal("a forgotten key sealed")
	}
}

// TestForgetWinsOverAnUnwrap: a read that unwraps a user's key from its
// row while an erasure in this process forgets the user (dataKey: the
// look-up, the unwrap, then ready) does not cache the key again; the read
// itself still opens its body (its statement saw the key before the
// erasure).
func TestForgetWinsOverAnUnwrap(t *testing.T) {
	k, wrapped, _, _ := sealedOne(t)
	k.Forget("user_1") // the cache empty: the next read unwraps
	k.mu.Lock()
	forgets := k.forgets // dataKey's look-up
	k.mu.Unlock()
	dek, err := k.unwrap("user_1", wrapped)
	if err != nil {
		t.Fatal(err)
	}
	d := dekEntry{wrapped: string(wrapped), at: time.Now()}
	copy(d.dek[:], dek)
	k.Forget("user_1") // the erasure, while the read unwraps
	if _, err := k.ready("user_1", d, false, forgets); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.cache["user_1"]; ok || k.CachedKey("user_1") != nil {
		t.Fatal("a key forgotten while a read unwrapped it was cached again")
	}
}

// A fresh key seals before it is stored, is not cached until Keep (its row
// committed), opens like any key from its wrapped form, and is not cached
// by a Keep that follows an erasure (Forget) in this process.
func TestFreshKeyIsCachedOnlyWhenKept(t *testing.T) {
	rings := newKeyrings(t, 2)
	k, other := rings[0], rings[1] // other: another process of the ledger
	f, err := k.NewFresh("user_f")
	if err != nil {
		t.Fatal(err)
	}
	if f.KEK != k.ID() || len(f.Wrapped) == 0 {
		t.Fatalf("fresh key: kek %q, wrapped %d bytes", f.KEK, len(f.Wrapped))
	}
	body := []byte(`{"fresh":true}`)
	sealed, c, err := k.SealFresh(f, "user_f", "msg_f", body)
	if err != nil {
		t.Fatal(err)
	}
	if k.CachedKey("user_f") != nil {
		t.Fatal("a fresh key is cached before Keep")
	}
	salt, got, erased, err := other.Open("user_f", f.Wrapped, "msg_f", sealed)
	if err != nil || erased || !bytes.Equal(got, body) || domain.BodyCommitment(salt, body) != c {
		t.Fatalf("open the fresh key's body elsewhere: %q erased=%v err=%v", got, erased, err)
	}
	k.Keep("user_f", f)
	if w := k.CachedKey("user_f"); !bytes.Equal(w, f.Wrapped) {
		t.Fatal("a kept fresh key is not cached")
	}
	if _, _, ok, err := k.SealCached("user_f", "msg_f2", body); !ok || err != nil {
		t.Fatalf("a kept fresh key does not seal from the cache: %v", err)
	}

	g, err := k.NewFresh("user_g")
	if err != nil {
		t.Fatal(err)
	}
	k.Forget("user_g") // an erasure between the key's making and its commit
	k.Keep("user_g", g)
	if k.CachedKey("user_g") != nil {
		t.Fatal("a fresh key kept after an erasure in this process was cached")
	}
}

// TestReadOfAnUnwrappedKeyEvictsNothing: a body opened with a key kept
// only unwrapped (its cipher evicted from the ready ones) opens with a
// cipher made for that read, and no ready cipher is evicted for it; a seal
// with the key (SealCached) makes it ready again.
func TestReadOfAnUnwrappedKeyEvictsNothing(t *testing.T) {
	k := newKeyring(t)
	wrapped := map[string][]byte{}
	for i := range maxCached {
		user := fmt.Sprintf("user_%05d", i)
		w, err := k.NewDataKey(user)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := k.Seal(user, w, "msg_1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		wrapped[user] = w
	}
	sealed, _, err := k.Seal("user_00000", wrapped["user_00000"], "msg_2", []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	k.mu.Lock()
	delete(k.cache, "user_00000") // evicted from the ready ones, kept unwrapped
	k.mu.Unlock()
	w, err := k.NewDataKey("user_new")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.Seal("user_new", w, "msg_1", []byte(`{}`)); err != nil { // fills the ready ones again
		t.Fatal(err)
	}
	before := map[string]bool{}
	for u := range k.cache {
		before[u] = true
	}
	if len(before) != maxCached {
		t.Fatalf("%d ready ciphers, want %d", len(before), maxCached)
	}
	_, body, erased, err := k.Open("user_00000", wrapped["user_00000"], "msg_2", sealed)
	if err != nil || erased || string(body) != `{"a":1}` {
		t.Fatalf("open with the unwrapped key: %q erased=%v err=%v", body, erased, err)
	}
	if _, ok := k.cache["user_00000"]; ok || len(k.cache) != maxCached {
		t.Fatalf("the read made its key ready again (%d ready)", len(k.cache))
	}
	for u := range before {
		if _, ok := k.cache[u]; !ok {
			t.Fatalf("the read evicted %s's ready cipher", u)
		}
	}
	if _, _, ok, err := k.SealCached("user_00000", "msg_3", []byte(`{}`)); !ok || err != nil {
		t.Fatalf("seal with the unwrapped key: ok=%v err=%v", ok, err)
	}
	if _, ok := k.cache["user_00000"]; !ok {
		t.Fatal("sealing did not make the key ready again")
	}
}
