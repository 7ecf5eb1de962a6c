package translog

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A witness's cosignature of a checkpoint, as C2SP tlog-cosignature v1
// defines it for Ed25519: a note signature line
//
//	— <witness name> base64(key ID || u64 timestamp || Ed25519 signature)
//
// with key ID SHA-256(name || "\n" || 0x04 || public key)[:4], over the
// message "cosignature/v1\ntime <timestamp>\n" || the checkpoint's note body.
// Keys are written like note keys with the signature type 0x04:
// PRIVATE+KEY+<name>+<key ID hex>+base64(0x04 || seed) and
// <name>+<key ID hex>+base64(0x04 || public key) (a C2SP vkey).

const (
	algCosignatureV1 = 0x04
	cosignHeader     = "cosignature/v1\n"
)

// cosignKeyID is the key ID (note key hash) of a witness key.
func cosignKeyID(name string, pub ed25519.PublicKey) uint32 {
	h := sha256.New()
	h.Write([]byte(name + "\n"))
	h.Write([]byte{algCosignatureV1})
	h.Write(pub)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

// cosignedMessage is what a cosignature of body at time ts signs.
func cosignedMessage(ts uint64, body []byte) []byte {
	return append(fmt.Appendf(nil, "%stime %d\n", cosignHeader, ts), body...)
}

// Cosigner is a witness's Ed25519 cosigning key. It implements note.Signer
// (each Sign is a cosignature stamped with the current time). It is safe
// for concurrent use.
type Cosigner struct {
	name string
	priv ed25519.PrivateKey
	id   uint32
	now  func() time.Time
}

// GenerateWitnessKey returns a new witness key named name (e.g.
// "witness.example.com/w1") and its verifier key.
func GenerateWitnessKey(name string) (skey, vkey string, err error) {
	if !validKeyName(name) {
		return "", "", domain.Errorf(domain.EINVALID, "witness key name %q: one word, no '+'", name)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate witness key: %w", err)
	}
	id := cosignKeyID(name, pub)
	skey = fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, priv.Seed()...)))
	vkey = fmt.Sprintf("%s+%08x+%s", name, id, base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, pub...)))
	return skey, vkey, nil
}

func validKeyName(name string) bool {
	return name != "" && !strings.ContainsAny(name, "+ \t\n\r") && strings.IndexFunc(name, func(r rune) bool { return r < 0x20 || r >= 0x7f }) < 0
}

// parseKey splits a witness key (without its PRIVATE+KEY+ prefix) into
// its name, key ID and key material of size bytes (after the 0x04).
func parseKey(text, what string, size int) (name string, id uint32, key []byte, err error) {
	bad := domain.Errorf(domain.EINVALID, "not a witness %s (name+id+base64 of 0x04 and the key)", what)
	parts := strings.SplitN(text, "+", 3)
	if len(parts) != 3 || !validKeyName(parts[0]) || len(parts[1]) != 8 {
		return "", 0, nil, bad
	}
	v, err := strconv.ParseUint(parts[1], 16, 32)
	if err != nil {
		return "", 0, nil, bad
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+size || raw[0] != algCosignatureV1 {
		return "", 0, nil, bad
	}
	return parts[0], uint32(v), raw[1:], nil
}

// ParseCosigner parses a witness signing key (GenerateWitnessKey's skey).
// It returns EINVALID naming what is wrong, never the key.
func ParseCosigner(skey string) (*Cosigner, error) {
	text, ok := strings.CutPrefix(strings.TrimSpace(skey), "PRIVATE+KEY+")
	if !ok {
		return nil, domain.Errorf(domain.EINVALID, "not a witness signing key (PRIVATE+KEY+name+id+key)")
	}
	name, id, seed, err := parseKey(text, "signing key", ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if cosignKeyID(name, priv.Public().(ed25519.PublicKey)) != id {
		return nil, domain.Errorf(domain.EINVALID, "witness signing key: its key ID does not match its key")
	}
	return &Cosigner{name: name, priv: priv, id: id, now: time.Now}, nil
}

// LoadCosigner reads a witness signing key: the key text or the path of a
// file holding it.
func LoadCosigner(value string) (*Cosigner, error) {
	text, err := keyText(value, "the witness key is neither a signing key")
	if err != nil {
		return nil, err
	}
	return ParseCosigner(text)
}

// Name implements note.Signer: the witness's name.
func (c *Cosigner) Name() string { return c.name }

// KeyHash implements note.Signer: the cosignature key ID.
func (c *Cosigner) KeyHash() uint32 { return c.id }

// Sign implements note.Signer: the timestamped signature of a cosignature
// of the note body msg, stamped now.
func (c *Cosigner) Sign(msg []byte) ([]byte, error) {
	ts := uint64(c.now().Unix())
	sig := binary.BigEndian.AppendUint64(nil, ts)
	return append(sig, ed25519.Sign(c.priv, cosignedMessage(ts, msg))...), nil
}

// VerifierKey is the witness's public key (name+id+base64 of 0x04 and the
// key), what a log's clients are given to check its cosignatures.
func (c *Cosigner) VerifierKey() string {
	return fmt.Sprintf("%s+%08x+%s", c.name, c.id, base64.StdEncoding.EncodeToString(append([]byte{algCosignatureV1}, c.priv.Public().(ed25519.PublicKey)...)))
}

// CosignatureVerifier checks one witness's cosignatures. It implements
// note.Verifier.
type CosignatureVerifier struct {
	name string
	id   uint32
	pub  ed25519.PublicKey
}

// ParseCosignatureVerifier parses a witness verifier key (VerifierKey's).
func ParseCosignatureVerifier(vkey string) (*CosignatureVerifier, error) {
	name, id, pub, err := parseKey(strings.TrimSpace(vkey), "verifier key", ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	if cosignKeyID(name, pub) != id {
		return nil, domain.Errorf(domain.EINVALID, "witness verifier key: its key ID does not match its key")
	}
	return &CosignatureVerifier{name: name, id: id, pub: pub}, nil
}

// Name implements note.Verifier.
func (v *CosignatureVerifier) Name() string { return v.name }

// KeyHash implements note.Verifier.
func (v *CosignatureVerifier) KeyHash() uint32 { return v.id }

// Verify implements note.Verifier: sig is a timestamp and an Ed25519
// signature of the cosigned message of msg at that time.
func (v *CosignatureVerifier) Verify(msg, sig []byte) bool {
	if len(sig) != 8+ed25519.SignatureSize {
		return false
	}
	ts := binary.BigEndian.Uint64(sig)
	if ts > 1<<63-1 {
		return false
	}
	return ed25519.Verify(v.pub, cosignedMessage(ts, msg), sig[8:])
}

// Cosigned returns the time of v's cosignature on the signed note msg.
// Errors: EINVALID when msg has no valid cosignature by v.
func (v *CosignatureVerifier) Cosigned(msg []byte) (time.Time, error) {
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return time.Time{}, domain.Errorf(domain.EINVALID, "the checkpoint carries no valid cosignature of %s", v.name)
	}
	for _, s := range n.Sigs {
		if s.Hash == v.id && s.Name == v.name {
			raw, _ := base64.StdEncoding.DecodeString(s.Base64)
			return time.Unix(int64(binary.BigEndian.Uint64(raw[4:])), 0).UTC(), nil
		}
	}
	return time.Time{}, domain.Errorf(domain.EINVALID, "the checkpoint carries no valid cosignature of %s", v.name)
}

// Cosign checks the signed checkpoint msg with the log's key and returns it
// with c's cosignature added (after every signature it carries, any earlier
// cosignature of c's key replaced). The caller must first have checked that
// the checkpoint is consistent with the last one c cosigned (CheckExtends):
// a cosignature states exactly that. Errors: EINVALID when msg is not
// signed by the log's key.
func Cosign(msg []byte, log *Verifier, c *Cosigner) ([]byte, error) {
	if _, err := log.Open(msg); err != nil {
		return nil, err
	}
	n, err := note.Open(msg, note.VerifierList(log.v))
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "checkpoint: %v", err)
	}
	// Keep the other witnesses' lines (note.Open lists them as unverified).
	n.Sigs = append(n.Sigs, n.UnverifiedSigs...)
	n.UnverifiedSigs = nil
	out, err := note.Sign(n, c)
	if err != nil {
		return nil, fmt.Errorf("cosign checkpoint: %w", err)
	}
	return out, nil
}

// CheckExtends checks, as a witness does before cosigning, that the
// checkpoint cur extends old (the last one cosigned): same log, not
// smaller, the same root at the same size, and otherwise proof proves the
// tree of old.Size with old's root a prefix of cur's (tlog.CheckTree).
// Errors: EINVALID naming the problem (a fork or a rollback).
func CheckExtends(old, cur Checkpoint, proof tlog.TreeProof) error {
	switch {
	case old.Origin != cur.Origin:
		return domain.Errorf(domain.EINVALID, "the checkpoint is of the log %q, the last cosigned of %q", cur.Origin, old.Origin)
	case cur.Size < old.Size:
		return domain.Errorf(domain.EINVALID, "the checkpoint's tree (%d) is smaller than the last cosigned (%d): the log rolled back", cur.Size, old.Size)
	case cur.Size == old.Size && cur.Root != old.Root:
		return domain.Errorf(domain.EINVALID, "the checkpoint and the last cosigned are both of %d leaves with other roots: the log forked", cur.Size)
	case cur.Size == old.Size || old.Size == 0:
		return nil
	}
	if err := tlog.CheckTree(proof, cur.Size, cur.Root, old.Size, old.Root); err != nil {
		return domain.Errorf(domain.EINVALID, "the consistency proof from the last cosigned checkpoint (%d) to this one (%d) does not check: the log forked or rewrote history", old.Size, cur.Size)
	}
	return nil
}
