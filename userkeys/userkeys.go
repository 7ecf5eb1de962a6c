// Package userkeys provides the cryptography of erasure by crypto-shredding:
// the master key (key-encryption key, KEK) read from LEDGER_MASTER_KEY, the
// per-user data keys (DEKs) it wraps, and the sealing of an event body under
// its user's data key. It holds no SQL: the wrapped keys live in the
// user_keys table (schema), and destroying a user's wrapped key is what
// erases every body sealed under it.
//
// Formats (version 1):
//
//	master key text: "clerk-ledger-master-key-v1:" || base64(32 random bytes)
//	key id:          hex(SHA-256("clerk-ledger/kek-id/v1\n" || kek))[:16]
//	wrapped DEK:     nonce(12) || AES-256-GCM_kek(dek(32), AAD = "clerk-ledger/dek/v1\n" || user id)
//	sealed body:     0x01 || nonce(12) || AES-256-GCM_dek(salt(32) || body,
//	                 AAD = "clerk-ledger/sealed/v1\n" || delivery id || 0x00 || user id)
//	discarded body:  0x00 (a delivery for a user already erased: kept as a fact, body not stored)
//
// The leaf of a sealed event commits to domain.BodyCommitment(salt, body):
// the salt is random per event and only inside the ciphertext, so once the
// data key is gone the commitment cannot be linked to a guessed body.
package userkeys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// KeyPrefix opens a master key's text.
const KeyPrefix = "clerk-ledger-master-key-v1:"

// SaltSize is the size of the random salt sealed with each body.
const SaltSize = 32

// Overhead is how many bytes a sealed body has beyond the body: version,
// nonce, salt and GCM tag.
const Overhead = 1 + 12 + SaltSize + 16

const (
	sealedV1  = 0x01
	discarded = 0x00
	dekAAD    = "clerk-ledger/dek/v1\n"
	sealedAAD = "clerk-ledger/sealed/v1\n"
)

// Discarded is the sealed form of a body that was not stored: a delivery
// about a user erased before it arrived.
var Discarded = []byte{discarded}

// maxCached bounds the data keys a Keyring keeps ready to use (about 1.4
// KB each: the AES key schedule and GCM tables).
const maxCached = 1024

// maxDEKs bounds the unwrapped data keys a Keyring keeps without their
// cipher (about 250 bytes each, with the map's share): a key that no
// longer fits among the maxCached ready ones costs a cipher set-up to use
// again (~0.6 µs), not a database read and an unwrap. Sealing for more
// users than maxCached, as a service receiving updates about thousands
// does, stays off the database. Both bounds together keep the keyring
// under 6 MB (it was 4,096 ready keys alone): serve collects at GOGC 400,
// so each MB it keeps live costs about five of RSS.
const maxDEKs = 16 * maxCached

// Keyring is the master key and a cache of unwrapped data keys. The cache
// is keyed by user and checked against the wrapped key the caller read from
// the database in the same statement as the sealed body, so a key destroyed
// there is never used again here, whichever process destroyed it. It is safe
// for concurrent use.
type Keyring struct {
	kek cipher.AEAD
	id  string

	mu    sync.Mutex
	cache map[string]cached   // ready to use (at most maxCached)
	deks  map[string]dekEntry // every key in cache and more (at most maxDEKs)
	// forgets counts Forget calls (under mu): Keep does not cache a fresh
	// key when an erasure in this process ran since it was made.
	forgets uint64
}

// Fresh is a new data key made by NewFresh, usable to seal before it is
// stored: its row is inserted with the events it seals, and Keep caches it
// once that commit succeeded. Not safe to share between users.
type Fresh struct {
	// Wrapped is the key wrapped by the master key (the user_keys row's).
	Wrapped []byte
	// KEK is the master key's id (the row's kek_id).
	KEK     string
	dek     [32]byte
	aead    cipher.AEAD
	forgets uint64 // Keyring.forgets when made
}

type cached struct {
	wrapped string
	aead    cipher.AEAD
	at      time.Time // when the wrapped key was last read from the database
}

// dekEntry is a data key kept unwrapped, without its cipher.
type dekEntry struct {
	wrapped string
	dek     [32]byte
	at      time.Time // as cached.at
}

// SealTTL is how long Sealing trusts a cached wrapped key without reading
// it from the database again (CachedKey): a key destroyed by another
// process is used to seal for at most that long (what it seals then is as
// unreadable as the rest), and leaves this process's memory within it.
const SealTTL = time.Minute

// New returns a Keyring with master key kek (32 bytes).
func New(kek []byte) (*Keyring, error) {
	if len(kek) != 32 {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY must hold 32 bytes, it holds %d", len(kek))
	}
	a, err := gcm(kek)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("clerk-ledger/kek-id/v1\n"), kek...))
	return &Keyring{kek: a, id: hex.EncodeToString(sum[:])[:16], cache: map[string]cached{}, deks: map[string]dekEntry{}}, nil
}

// Load reads a master key from v: the key text (KeyPrefix + base64 of 32
// bytes) or the path of a file holding it. Errors are EINVALID lines naming
// LEDGER_MASTER_KEY, never the key.
func Load(v string) (*Keyring, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY is not set (ledger dev keeps one in ./.data/master.key; ledger keys new makes one)")
	}
	if !strings.HasPrefix(v, KeyPrefix) {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY is neither a master key (%s...) nor a readable file", KeyPrefix)
		}
		v = strings.TrimSpace(string(b))
	}
	if !strings.HasPrefix(v, KeyPrefix) {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY's file does not hold a master key (%s...)", KeyPrefix)
	}
	kek, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v, KeyPrefix))
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_MASTER_KEY is not base64 after %s", KeyPrefix)
	}
	return New(kek)
}

// Generate returns the text of a new random master key.
func Generate() (string, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return "", fmt.Errorf("generate master key: %w", err)
	}
	return KeyPrefix + base64.StdEncoding.EncodeToString(k), nil
}

// ID returns the master key's id (stored with each wrapped key, so a wrong
// master key is told at start-up rather than at the first read).
func (k *Keyring) ID() string { return k.id }

func gcm(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(b)
}

// NewDataKey returns a new random data key for user, wrapped by the master
// key (store it in user_keys).
func (k *Keyring) NewDataKey(user string) ([]byte, error) {
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	return k.wrap(user, dek)
}

func (k *Keyring) wrap(user string, dek []byte) ([]byte, error) {
	nonce := make([]byte, k.kek.NonceSize(), k.kek.NonceSize()+len(dek)+k.kek.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("wrap data key: %w", err)
	}
	return k.kek.Seal(nonce, nonce, dek, []byte(dekAAD+user)), nil
}

// unwrap returns the data key of user from its wrapped form.
func (k *Keyring) unwrap(user string, wrapped []byte) ([]byte, error) {
	ns := k.kek.NonceSize()
	if len(wrapped) < ns {
		return nil, domain.Errorf(domain.EINVALID, "the data key of user %s is truncated", user)
	}
	dek, err := k.kek.Open(nil, wrapped[:ns], wrapped[ns:], []byte(dekAAD+user))
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "the data key of user %s does not open with LEDGER_MASTER_KEY (a wrong master key, or a changed key row)", user)
	}
	return dek, nil
}

// Check reports whether wrapped (user's) opens with this master key.
func (k *Keyring) Check(user string, wrapped []byte) error {
	_, err := k.unwrap(user, wrapped)
	return err
}

// Rewrap returns user's wrapped data key wrapped under to instead of k.
func (k *Keyring) Rewrap(user string, wrapped []byte, to *Keyring) ([]byte, error) {
	dek, err := k.unwrap(user, wrapped)
	if err != nil {
		return nil, err
	}
	return to.wrap(user, dek)
}

// dataKey returns the AEAD of user's data key, wrapped as given. A key
// kept unwrapped without its cipher (evicted from the ready tier) gets a
// cipher for this read alone: putting it back would evict another, and a
// read of a key that left the ready tier (the users projector a few
// thousand deliveries behind ingest, each about a new user) is seldom
// followed by another soon. Sealing puts it back (fresh). A key unwrapped
// from the database is kept in both tiers.
func (k *Keyring) dataKey(user string, wrapped []byte) (cipher.AEAD, error) {
	k.mu.Lock()
	c, ok := k.cache[user]
	d, dok := k.deks[user]
	forgets := k.forgets
	k.mu.Unlock()
	if ok && c.wrapped == string(wrapped) {
		return c.aead, nil
	}
	if dok && d.wrapped == string(wrapped) {
		return gcm(d.dek[:])
	}
	dek, err := k.unwrap(user, wrapped)
	if err != nil {
		return nil, err
	}
	d = dekEntry{wrapped: string(wrapped), at: time.Now()}
	copy(d.dek[:], dek)
	return k.ready(user, d, false, forgets)
}

// ready makes the cipher of d, user's data key, and keeps both (evicting
// one entry of each when full), unless Forget ran since the caller read
// forgets (k.forgets, under k.mu) or, with kept (d is an entry of
// k.deks), d is no longer there: then the cipher serves the caller once
// and nothing is kept, so an erasure in this process drops the key for
// good, however it races with a read that was unwrapping it.
func (k *Keyring) ready(user string, d dekEntry, kept bool, forgets uint64) (cipher.AEAD, error) {
	a, err := gcm(d.dek[:])
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forgets != forgets {
		return a, nil
	}
	if cur, ok := k.deks[user]; kept && (!ok || cur.wrapped != d.wrapped) {
		return a, nil
	}
	k.store(user, d, a)
	return a, nil
}

// keep stores d and its cipher a as user's unless Forget ran since the
// count forgets was read (Keep).
func (k *Keyring) keep(user string, d dekEntry, a cipher.AEAD, forgets uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forgets != forgets {
		return
	}
	k.store(user, d, a)
}

// store puts d and its cipher a in the two tiers as user's, evicting one
// entry of each when full. k.mu must be held.
func (k *Keyring) store(user string, d dekEntry, a cipher.AEAD) {
	// Full: one entry (where a map's iteration starts, at random) makes
	// room. Clearing it all would make the next reads unwrap again: a
	// rebuild over more users than fit would hit about half as often.
	if _, ok := k.cache[user]; !ok && len(k.cache) >= maxCached {
		for u := range k.cache {
			delete(k.cache, u)
			break
		}
	}
	if _, ok := k.deks[user]; !ok && len(k.deks) >= maxDEKs {
		for u := range k.deks {
			delete(k.deks, u)
			break
		}
	}
	k.cache[user] = cached{wrapped: d.wrapped, aead: a, at: d.at}
	k.deks[user] = d
}

// CachedKey returns user's wrapped data key when this keyring read it from
// the database less than SealTTL ago (nil otherwise): the append path then
// seals without asking the database. Entries past it are dropped.
func (k *Keyring) CachedKey(user string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	d, ok := k.deks[user]
	if !ok {
		return nil
	}
	if time.Since(d.at) >= SealTTL {
		delete(k.cache, user)
		delete(k.deks, user)
		return nil
	}
	return []byte(d.wrapped)
}

// fresh returns the cipher of user's data key when this keyring read the
// wrapped key from the database less than SealTTL ago (making the cipher
// when only the key is kept), dropping the key when older.
func (k *Keyring) fresh(user string) (cipher.AEAD, bool, error) {
	k.mu.Lock()
	d, ok := k.deks[user]
	if ok && time.Since(d.at) >= SealTTL {
		delete(k.cache, user)
		delete(k.deks, user)
		ok = false
	}
	c, cok := k.cache[user]
	forgets := k.forgets
	k.mu.Unlock()
	switch {
	case !ok:
		return nil, false, nil
	case cok && c.wrapped == d.wrapped:
		return c.aead, true, nil
	}
	a, err := k.ready(user, d, true, forgets)
	return a, err == nil, err
}

// SealCached is Seal under user's data key as CachedKey finds it, with one
// look-up: ok is false, with nothing sealed, when CachedKey would return
// nil (the caller then reads or makes the key, SealDeliveries).
func (k *Keyring) SealCached(user, deliveryID string, body []byte) (sealed []byte, commitment [domain.HashSize]byte, ok bool, err error) {
	a, ok, err := k.fresh(user)
	if !ok {
		return nil, commitment, false, err
	}
	sealed, commitment, err = seal(a, user, deliveryID, body)
	return sealed, commitment, err == nil, err
}

// Forget drops user's data key from the cache (erasure in this process).
func (k *Keyring) Forget(user string) {
	k.mu.Lock()
	delete(k.cache, user)
	delete(k.deks, user)
	k.forgets++
	k.mu.Unlock()
}

// NewFresh returns a new random data key for user, wrapped and ready to
// seal (SealFresh), and caches nothing: a key whose row is not stored yet
// must not seal other deliveries. Keep caches it once its row committed.
func (k *Keyring) NewFresh(user string) (*Fresh, error) {
	f := &Fresh{KEK: k.id}
	if _, err := rand.Read(f.dek[:]); err != nil {
		return nil, fmt.Errorf("generate data key: %w", err)
	}
	var err error
	if f.Wrapped, err = k.wrap(user, f.dek[:]); err != nil {
		return nil, err
	}
	if f.aead, err = gcm(f.dek[:]); err != nil {
		return nil, err
	}
	k.mu.Lock()
	f.forgets = k.forgets
	k.mu.Unlock()
	return f, nil
}

// SealFresh is Seal under the fresh key f (user's, from NewFresh).
func (k *Keyring) SealFresh(f *Fresh, user, deliveryID string, body []byte) ([]byte, [domain.HashSize]byte, error) {
	return seal(f.aead, user, deliveryID, body)
}

// Keep caches f as user's data key, read from the database now: call it
// once f's row committed (stored by this process's statement). When an
// erasure in this process (Forget) ran since f was made, nothing is kept:
// the key may be the erased user's, destroyed meanwhile.
func (k *Keyring) Keep(user string, f *Fresh) {
	k.keep(user, dekEntry{wrapped: string(f.Wrapped), dek: f.dek, at: time.Now()}, f.aead, f.forgets)
}

// Seal encrypts body (delivery id's, about user) under user's data key,
// wrapped as given, with a fresh random salt, and returns the sealed bytes
// and the body commitment domain.BodyCommitment(salt, body) the event's
// leaf makes.
func (k *Keyring) Seal(user string, wrapped []byte, deliveryID string, body []byte) ([]byte, [domain.HashSize]byte, error) {
	a, err := k.dataKey(user, wrapped)
	if err != nil {
		return nil, [domain.HashSize]byte{}, err
	}
	return seal(a, user, deliveryID, body)
}

// seal is Seal with user's data key a. The sealed form is built in one
// allocation: version, nonce and salt (one random read), then the body,
// encrypted in place with the salt, then the tag.
func seal(a cipher.AEAD, user, deliveryID string, body []byte) ([]byte, [domain.HashSize]byte, error) {
	head := 1 + a.NonceSize()
	out := make([]byte, head+SaltSize+len(body), head+SaltSize+len(body)+a.Overhead())
	out[0] = sealedV1
	if _, err := rand.Read(out[1 : head+SaltSize]); err != nil {
		return nil, [domain.HashSize]byte{}, fmt.Errorf("seal body: %w", err)
	}
	plain := out[head:]
	copy(plain[SaltSize:], body)
	c := domain.BodyCommitment(plain[:SaltSize], body)
	// The ciphertext overwrites plain exactly (dst out[:head] appends there).
	out = a.Seal(out[:head], out[1:head], plain, sealedAADOf(deliveryID, user))
	return out, c, nil
}

// DiscardCommitment returns a commitment for a body that is not stored
// (Discarded): under a random salt that is thrown away, it can be linked
// to no body.
func DiscardCommitment(body []byte) ([domain.HashSize]byte, error) {
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return [domain.HashSize]byte{}, fmt.Errorf("discard body: %w", err)
	}
	return domain.BodyCommitment(salt, body), nil
}

func sealedAADOf(deliveryID, user string) []byte {
	return []byte(sealedAAD + deliveryID + "\x00" + user)
}

// Open decrypts sealed (Seal's output for delivery id and user) with user's
// data key, wrapped as given, and returns the salt and the body. erased is
// true, with no error, when the body cannot exist any more: wrapped is nil
// (the key was destroyed) or sealed is Discarded. Any other failure (a
// wrong master key, a changed row) is an error. A read of many bodies opens
// them with an Opener instead.
func (k *Keyring) Open(user string, wrapped []byte, deliveryID string, sealed []byte) (salt, body []byte, erased bool, err error) {
	if erased, err := checkSealed(k, nil, user, wrapped, deliveryID, sealed); erased || err != nil {
		return nil, nil, erased, err
	}
	a, err := k.dataKey(user, wrapped)
	if err != nil {
		return nil, nil, false, err
	}
	plain, _, err := openWith(a, nil, user, deliveryID, sealed)
	if err != nil {
		return nil, nil, false, err
	}
	return plain[:SaltSize:SaltSize], plain[SaltSize:], false, nil
}

// checkSealed is the part of opening sealed before its key is needed: erased
// when sealed is Discarded or wrapped is nil (then user's key is dropped
// from k's cache and from keys), an error for an unknown format.
func checkSealed(k *Keyring, keys map[string]cached, user string, wrapped []byte, deliveryID string, sealed []byte) (erased bool, err error) {
	if wrapped == nil && !isDiscarded(sealed) {
		// Destroyed (maybe by another process): drop any cached copy.
		delete(keys, user)
		k.Forget(user)
		return true, nil
	}
	return checkFormat(deliveryID, sealed)
}

// checkFormat reports whether sealed is Discarded (erased), and is an error
// when it is of an unknown format.
func checkFormat(deliveryID string, sealed []byte) (erased bool, err error) {
	if isDiscarded(sealed) {
		return true, nil
	}
	if len(sealed) == 0 || sealed[0] != sealedV1 {
		return false, fmt.Errorf("sealed body of delivery %s: unknown format", deliveryID)
	}
	return false, nil
}

func isDiscarded(sealed []byte) bool { return len(sealed) == 1 && sealed[0] == discarded }

// openWith decrypts sealed (version 1) with a, building the associated data
// in aad's memory, and returns the plaintext (salt || body, a fresh slice)
// and aad's memory to use again.
func openWith(a cipher.AEAD, aad []byte, user, deliveryID string, sealed []byte) (plain, aadBuf []byte, err error) {
	ns := a.NonceSize()
	if len(sealed) < 1+ns+a.Overhead()+SaltSize {
		return nil, aad, fmt.Errorf("sealed body of delivery %s is truncated", deliveryID)
	}
	if n := len(sealedAAD) + len(deliveryID) + 1 + len(user); cap(aad) < n {
		aad = make([]byte, 0, n)
	}
	aad = append(append(append(append(aad[:0], sealedAAD...), deliveryID...), 0), user...)
	plain, err = a.Open(nil, sealed[1:1+ns], sealed[1+ns:], aad)
	if err != nil {
		return nil, aad, fmt.Errorf("sealed body of delivery %s does not open with its user's data key", deliveryID)
	}
	return plain, aad, nil
}

// maxOpenerKeys bounds the data keys one Opener keeps at hand.
const maxOpenerKeys = 16384

// Opener opens the sealed bodies of one read, one at a time, as
// Keyring.Open does, with less work per body: the data keys it used are
// kept at hand (up to maxOpenerKeys, beyond the keyring's cache, without
// its lock) and each is used again only while the wrapped key the caller
// read with the body is byte for byte the one it was unwrapped from, as
// the keyring's cache checks; a nil wrapped key (destroyed) drops the
// user's key from it and from the keyring. It is not safe for concurrent
// use, and keeps its keys as long as it lives: make one per read.
type Opener struct {
	k    *Keyring
	keys map[string]cached // at is not used
	aad  []byte
}

// Opener returns a new Opener of k's bodies (nil for a nil k: no keyring).
func (k *Keyring) Opener() *Opener {
	if k == nil {
		return nil
	}
	return &Opener{k: k, keys: map[string]cached{}}
}

// Open is Keyring.Open. The salt and body are one fresh slice, kept by
// the caller; nothing of wrapped or sealed is kept, so they may be the
// driver's buffer (sql.RawBytes).
func (o *Opener) Open(user string, wrapped []byte, deliveryID string, sealed []byte) (salt, body []byte, erased bool, err error) {
	if erased, err := checkSealed(o.k, o.keys, user, wrapped, deliveryID, sealed); erased || err != nil {
		return nil, nil, erased, err
	}
	a, err := o.dataKey(user, wrapped)
	if err != nil {
		return nil, nil, false, err
	}
	plain, aad, err := openWith(a, o.aad, user, deliveryID, sealed)
	o.aad = aad
	if err != nil {
		return nil, nil, false, err
	}
	return plain[:SaltSize:SaltSize], plain[SaltSize:], false, nil
}

// dataKey is Keyring.dataKey, asked only for a key this Opener does not
// hold as wrapped.
func (o *Opener) dataKey(user string, wrapped []byte) (cipher.AEAD, error) {
	c, held := o.keys[user] // one look-up: a read past its keys misses most
	if held && c.wrapped == string(wrapped) {
		return c.aead, nil
	}
	if !held && len(o.keys) >= maxOpenerKeys {
		// Full (a read over more users than it holds, as a rebuild's):
		// the key is unwrapped for this body alone, past the keyring's
		// cache, which such a read would only churn.
		dek, err := o.k.unwrap(user, wrapped)
		if err != nil {
			return nil, err
		}
		return gcm(dek)
	}
	a, err := o.k.dataKey(user, wrapped)
	if err != nil {
		return nil, err
	}
	o.keys[user] = cached{wrapped: string(wrapped), aead: a}
	return a, nil
}

// Pending is a sealed body not decrypted yet: its data key found by an
// Opener (Prepare), or left to the goroutine that opens it (Defer). It
// holds its own copy of the ciphertext, which becomes the plaintext.
type Pending struct {
	a                cipher.AEAD // nil when deferred (Defer): OpenIn finds it
	user, deliveryID string
	nonce, buf       []byte // buf: the ciphertext and tag, opened in place
	k                *Keyring
}

// Prepare is the first half of Open, on the Opener's goroutine: it checks
// sealed and wrapped as Open does (erased, or an error, ends there) and
// finds the data key, keeping nothing of wrapped or sealed (they may be
// the driver's buffer); the Pending it returns does the decryption.
func (o *Opener) Prepare(user string, wrapped []byte, deliveryID string, sealed []byte) (p Pending, erased bool, err error) {
	if erased, err := checkSealed(o.k, o.keys, user, wrapped, deliveryID, sealed); erased || err != nil {
		return Pending{}, erased, err
	}
	a, err := o.dataKey(user, wrapped)
	if err != nil {
		return Pending{}, false, err
	}
	ns := a.NonceSize()
	if len(sealed) < 1+ns+a.Overhead()+SaltSize {
		return Pending{}, false, fmt.Errorf("sealed body of delivery %s is truncated", deliveryID)
	}
	// One allocation, not zeroed (append), for the nonce and ciphertext.
	buf := append([]byte(nil), sealed[1:]...)
	return Pending{a: a, user: user, deliveryID: deliveryID, nonce: buf[:ns:ns], buf: buf[ns:]}, false, nil
}

// Defer is Prepare for a reader that keeps its users' data keys itself,
// each in a Slot next to its own state for the user (a rebuild's fold,
// whose workers each own a share of the users): it checks sealed alone (a
// discarded body is erased; an unknown format or a truncated body is an
// error) and keeps nothing of it (it may be the driver's buffer); the
// Pending it returns is opened by OpenIn with the user's Slot. Nothing is
// looked up: it is safe for concurrent use.
func (k *Keyring) Defer(user, deliveryID string, sealed []byte) (p Pending, erased bool, err error) {
	if erased, err := checkFormat(deliveryID, sealed); erased || err != nil {
		return Pending{}, erased, err
	}
	if len(sealed) < Overhead {
		return Pending{}, false, fmt.Errorf("sealed body of delivery %s is truncated", deliveryID)
	}
	const ns = 12 // AES-GCM's standard nonce (Overhead counts it)
	buf := append([]byte(nil), sealed[1:]...)
	return Pending{k: k, user: user, deliveryID: deliveryID, nonce: buf[:ns:ns], buf: buf[ns:]}, false, nil
}

// Slot is one user's data key as kept by the goroutine that opens that
// user's deferred bodies (Pending.OpenIn), next to its own state for the
// user: Hold gives it the key as wrapped, the first body unwraps it, the
// next ones only set up its cipher. The zero Slot holds no key: the user
// has none, or it was destroyed (erased). A Slot is for one user and is
// not safe for concurrent use.
type Slot struct {
	state   uint8             // slotEmpty, slotWrapped or slotOpen
	wrapped [wrappedSize]byte // inline: no memory of its own to collect
	dek     [32]byte
}

const (
	slotEmpty   = iota // no key: the user's bodies are erased
	slotWrapped        // wrapped holds the key, not unwrapped yet
	slotOpen           // dek holds the key
)

// wrappedSize is the size of a wrapped data key: nonce, key and tag.
const wrappedSize = 12 + 32 + 16

// Hold gives s the user's data key as its row stores it (wrapped, not
// nil), to unwrap on its first use; a key of another size is an error.
func (s *Slot) Hold(wrapped []byte) error {
	if len(wrapped) != wrappedSize {
		return domain.Errorf(domain.EINVALID, "a wrapped data key of %d bytes (want %d)", len(wrapped), wrappedSize)
	}
	s.state, s.wrapped, s.dek = slotWrapped, [wrappedSize]byte(wrapped), [32]byte{}
	return nil
}

// OpenIn is Open for a deferred Pending (Defer), with the data key of
// slot, which must be the user's, given its key by Hold: the key is
// unwrapped into the slot the first time. A slot holding no key means the
// key was destroyed: erased is true and nothing is opened. A key that does
// not unwrap (a wrong master key, a changed row) or a body that does not
// open is an error. A Pending made by Prepare ignores slot.
func (p *Pending) OpenIn(slot *Slot, aad []byte) (salt, body, aadBuf []byte, erased bool, err error) {
	if p.a == nil {
		switch slot.state {
		case slotEmpty:
			return nil, nil, aad, true, nil
		case slotWrapped:
			dek, err := p.k.unwrap(p.user, slot.wrapped[:])
			if err != nil {
				return nil, nil, aad, false, err
			}
			if len(dek) != len(slot.dek) {
				return nil, nil, aad, false, fmt.Errorf("the data key of user %s has an unknown size", p.user)
			}
			copy(slot.dek[:], dek)
			slot.state = slotOpen
		}
		if p.a, err = gcm(slot.dek[:]); err != nil {
			return nil, nil, aad, false, err
		}
	}
	salt, body, aad, err = p.Open(aad)
	return salt, body, aad, false, err
}

// Open decrypts p in place and returns the salt and the body (one slice,
// kept by the caller), building the associated data in aad's memory, and
// aad's memory to use again. Any failure is an error, as Keyring.Open's.
// A deferred Pending (Defer) is opened with OpenIn.
func (p *Pending) Open(aad []byte) (salt, body, aadBuf []byte, err error) {
	if p.a == nil {
		return nil, nil, aad, fmt.Errorf("sealed body of delivery %s: no data key found for it (Pending.OpenIn)", p.deliveryID)
	}
	if n := len(sealedAAD) + len(p.deliveryID) + 1 + len(p.user); cap(aad) < n {
		aad = make([]byte, 0, n)
	}
	aad = append(append(append(append(aad[:0], sealedAAD...), p.deliveryID...), 0), p.user...)
	plain, err := p.a.Open(p.buf[:0], p.nonce, p.buf, aad)
	if err != nil {
		return nil, nil, aad, fmt.Errorf("sealed body of delivery %s does not open with its user's data key", p.deliveryID)
	}
	return plain[:SaltSize:SaltSize], plain[SaltSize:], aad, nil
}
