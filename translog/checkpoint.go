package translog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a tree head as the C2SP tlog-checkpoint format states it:
// the log's origin, the tree size and its root hash.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Body returns the checkpoint's note text:
//
//	<origin>\n<tree size, decimal>\n<root hash, standard base64>\n
func (c Checkpoint) Body() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint parses a checkpoint body (extension lines after the root
// are allowed by the format and ignored). It returns EINVALID for anything
// else.
func ParseCheckpoint(text []byte) (Checkpoint, error) {
	bad := domain.Errorf(domain.EINVALID, "not a tlog-checkpoint: want origin, tree size and base64 root hash on three lines")
	lines := strings.SplitN(string(text), "\n", 4)
	if len(lines) < 4 || lines[0] == "" {
		return Checkpoint{}, bad
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, bad
	}
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return Checkpoint{}, bad
	}
	c := Checkpoint{Origin: lines[0], Size: n}
	copy(c.Root[:], h)
	return c, nil
}

// Signer signs checkpoints with an Ed25519 note key.
type Signer struct {
	signer   note.Signer
	verifier string
}

// GenerateKey returns a new Ed25519 note signing key named name (the log's
// origin, e.g. "clerk-ledger/ledger.example.com") and its verifier key.
func GenerateKey(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", domain.Errorf(domain.EINVALID, "log key name %q: %v (no spaces or '+')", name, err)
	}
	return skey, vkey, nil
}

// LoadSigner reads LEDGER_LOG_KEY's value: the signing key text
// (PRIVATE+KEY+name+hash+key) or the path of a file holding it. It returns
// EINVALID naming what is wrong, never the key.
func LoadSigner(value string) (*Signer, error) {
	text, err := keyText(value, "LEDGER_LOG_KEY is neither a note signing key")
	if err != nil {
		return nil, err
	}
	return ParseSigner(text)
}

// keyText returns value, a signing key's text (PRIVATE+KEY+…) or the path of
// a file holding one, as the key's text. A path that cannot be read is an
// EINVALID error starting with neither.
func keyText(value, neither string) (string, error) {
	text := strings.TrimSpace(value)
	if !strings.HasPrefix(text, "PRIVATE+KEY+") {
		b, err := os.ReadFile(text)
		if err != nil {
			return "", domain.Errorf(domain.EINVALID, "%s (PRIVATE+KEY+…) nor a readable file: %v", neither, errors.Unwrap(err))
		}
		text = strings.TrimSpace(string(b))
	}
	return text, nil
}

// ParseSigner parses a note signing key (PRIVATE+KEY+name+hash+key, Ed25519).
func ParseSigner(skey string) (*Signer, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_LOG_KEY is not a note signing key (PRIVATE+KEY+name+hash+key)")
	}
	// The verifier key is not exported by note: derive it from the seed.
	// PRIVATE+KEY+<name>+<hash>+<base64 key>: the key's base64 may hold '+'.
	parts := strings.SplitN(strings.TrimPrefix(skey, "PRIVATE+KEY+"), "+", 3)
	if len(parts) != 3 {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_LOG_KEY is not a note signing key (PRIVATE+KEY+name+hash+key)")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_LOG_KEY is not an Ed25519 note signing key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "LEDGER_LOG_KEY: %v", err)
	}
	return &Signer{signer: s, verifier: vkey}, nil
}

// Name is the key's name; the default origin of the log.
func (s *Signer) Name() string { return s.signer.Name() }

// VerifierKey is the public key that checks the signer's checkpoints
// (name+hash+key), what `ledger audit key` prints.
func (s *Signer) VerifierKey() string { return s.verifier }

// Sign returns c as a signed note (the body, a blank line, the signature).
func (s *Signer) Sign(c Checkpoint) ([]byte, error) {
	if c.Origin == "" || strings.ContainsAny(c.Origin, "\n") {
		return nil, domain.Errorf(domain.EINVALID, "checkpoint origin %q is not one line", c.Origin)
	}
	msg, err := note.Sign(&note.Note{Text: string(c.Body())}, s.signer)
	if err != nil {
		return nil, fmt.Errorf("sign checkpoint: %w", err)
	}
	return msg, nil
}

// Verifier checks checkpoints signed by one key.
type Verifier struct {
	v note.Verifier
}

// ParseVerifier parses a verifier key (name+hash+key, what `ledger audit
// key` prints). It returns EINVALID when it is not one.
func ParseVerifier(vkey string) (*Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "not a note verifier key (name+hash+key): %v", err)
	}
	return &Verifier{v: v}, nil
}

// Name is the key's name.
func (v *Verifier) Name() string { return v.v.Name() }

// Open checks a signed checkpoint note with v and returns the checkpoint it
// states. It returns EINVALID when the note is malformed, not signed by v's
// key (another key, or none), its signature does not verify, or its text is
// not a checkpoint.
func (v *Verifier) Open(msg []byte) (Checkpoint, error) {
	if err := canonicalSignatures(msg); err != nil {
		return Checkpoint{}, err
	}
	n, err := note.Open(msg, note.VerifierList(v.v))
	if err != nil {
		var unknown *note.UnknownVerifierError
		var unverified *note.UnverifiedNoteError
		switch {
		case errors.As(err, &unverified), errors.As(err, &unknown):
			return Checkpoint{}, domain.Errorf(domain.EINVALID, "checkpoint is not signed by the key %s", v.v.Name())
		}
		var invalid *note.InvalidSignatureError
		if errors.As(err, &invalid) {
			return Checkpoint{}, domain.Errorf(domain.EINVALID, "checkpoint signature by %s does not verify", v.v.Name())
		}
		return Checkpoint{}, domain.Errorf(domain.EINVALID, "checkpoint is not a signed note: %v", err)
	}
	return ParseCheckpoint([]byte(n.Text))
}

// NoteBody returns the text of a signed note before its signatures, without
// checking them (to show or compare it).
func NoteBody(msg []byte) []byte {
	if i := bytes.LastIndex(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+1]
	}
	return msg
}

// canonicalSignatures refuses a note whose signature lines are not in
// canonical base64: note.Open would accept a spelling whose last character
// differs in its unused bits, so a kept checkpoint's bytes could change and
// still verify.
func canonicalSignatures(msg []byte) error {
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		return domain.Errorf(domain.EINVALID, "checkpoint is not a signed note")
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(msg[i+2:]), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue // note.Open judges the line
		}
		if b, err := base64.StdEncoding.DecodeString(f[2]); err == nil && base64.StdEncoding.EncodeToString(b) != f[2] {
			return domain.Errorf(domain.EINVALID, "checkpoint signature is not in canonical base64")
		}
	}
	return nil
}

// WriteFile replaces the file path with a note (or any data) atomically:
// a temporary file in the same directory, synced, then renamed over path,
// so a reader (or a sync to elsewhere) sees the old note or the new one,
// never part of one.
func WriteFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".note-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		os.Remove(tmp.Name())
	}
	return werr
}
