package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/projections"
	"github.com/clerk-ledger/clerk-ledger/translog"
)

// logConfig is the verifiable log's settings: the checkpoint signing key
// (LEDGER_LOG_KEY; nil: the tree is built but no checkpoint is signed), the
// checkpoints' origin line (LEDGER_LOG_ORIGIN, default the key's name), a
// directory that receives a copy of each checkpoint (LEDGER_CHECKPOINT_DIR)
// and how often one is signed while the tree grows
// (LEDGER_CHECKPOINT_INTERVAL).
type logConfig struct {
	Signer   *translog.Signer
	Origin   string
	Dir      string
	Interval time.Duration
}

// loadLogConfig reads the log's settings; a malformed one stops start-up
// with a line naming it (never the key).
func loadLogConfig(env func(string) string) (logConfig, error) {
	c := logConfig{Interval: projections.DefaultCheckpointInterval, Dir: strings.TrimSpace(env("LEDGER_CHECKPOINT_DIR"))}
	if v := strings.TrimSpace(env("LEDGER_LOG_KEY")); v != "" {
		s, err := translog.LoadSigner(v)
		if err != nil {
			return c, err
		}
		c.Signer = s
	}
	c.Origin = strings.TrimSpace(env("LEDGER_LOG_ORIGIN"))
	if c.Origin == "" && c.Signer != nil {
		c.Origin = c.Signer.Name()
	}
	if strings.ContainsAny(c.Origin, "\n\r") {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_LOG_ORIGIN must be one line")
	}
	if v := strings.TrimSpace(env("LEDGER_CHECKPOINT_INTERVAL")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second {
			return c, domain.Errorf(domain.EINVALID, "LEDGER_CHECKPOINT_INTERVAL %q is not a duration of at least 1s (e.g. 5s)", v)
		}
		c.Interval = d
	}
	if c.Dir != "" && c.Signer == nil {
		return c, domain.Errorf(domain.EINVALID, "LEDGER_CHECKPOINT_DIR is set but LEDGER_LOG_KEY is not: no checkpoint would be signed")
	}
	return c, nil
}

// verifierKey returns the log's verifier: from flag (a verifier key, or
// the path of a file holding one) when given, else LEDGER_LOG_KEY's; nil
// when neither is set.
func (c logConfig) verifierKey(flag string) (*translog.Verifier, error) {
	if flag = strings.TrimSpace(flag); flag != "" {
		return parseVerifierFlag(flag)
	}
	if c.Signer == nil {
		return nil, nil
	}
	return translog.ParseVerifier(c.Signer.VerifierKey())
}

// parseVerifierFlag reads --key: a verifier key (name+hash+key) or a file
// holding one.
func parseVerifierFlag(v string) (*translog.Verifier, error) {
	if b, err := os.ReadFile(v); err == nil {
		v = strings.TrimSpace(string(b))
	}
	k, err := translog.ParseVerifier(v)
	if err != nil {
		return nil, domain.Errorf(domain.EINVALID, "--key: %s", domain.ErrorMessage(err))
	}
	return k, nil
}

// devLogKey returns the log signing key kept in path, generating and saving
// one (mode 0600) named "clerk-ledger/<host>-dev" the first time.
func devLogKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if _, err := translog.ParseSigner(s); err != nil {
			return "", domain.Errorf(domain.EINVALID, "%s does not hold a log signing key; delete it to generate a new one", path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	host, _ := os.Hostname()
	skey, _, err := translog.GenerateKey(defaultOrigin(host) + "-dev")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(skey+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("save %s: %w", path, err)
	}
	return skey, nil
}

// defaultOrigin is the log name a generated key gets: "clerk-ledger/<host>"
// with anything a note key name cannot hold dropped.
func defaultOrigin(host string) string {
	var b strings.Builder
	for _, r := range host {
		if r > ' ' && r < 0x7f && r != '+' {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "clerk-ledger/ledger"
	}
	return "clerk-ledger/" + b.String()
}
