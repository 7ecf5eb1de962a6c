package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/clerk-ledger/clerk-ledger/domain"
	"github.com/clerk-ledger/clerk-ledger/translog"
	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"
)

// auditCosignCmd is `ledger audit cosign`: a minimal witness. It keeps the
// last checkpoint it cosigned in --state and cosigns the latest one only
// once it has checked, with the library's own checker, that the latest
// extends it.
func (a *app) auditCosignCmd() *cobra.Command {
	var witnessKey, logKey, state, out, newName string
	cmd := &cobra.Command{
		Use:   "cosign",
		Short: "Witness the log: check the latest checkpoint extends the last cosigned one, and cosign it",
		Long: `cosign is a minimal witness (C2SP tlog-cosignature v1, Ed25519). It reads the
latest signed checkpoint, checks its signature with the log's verifier key
(--key, default LEDGER_LOG_KEY's), and, when --state holds the last checkpoint
it cosigned, fetches the consistency proof between the two and checks it
(tlog.CheckTree): the log neither forked nor rewrote history since. Then it adds
the witness's cosignature line to the checkpoint, writes it to --out (or
stdout) and keeps it in --state. A checkpoint that does not extend the last
cosigned one is refused (exit 1) and --state is left as it was. The reads are
recorded in the access log. Run it from the witness's own machine and keep its
key and state there: a cosignature is worth what the witness's independence
is. With --new NAME it generates a witness key named NAME and prints it and its
verifier key.`,
		Example: `  ledger audit cosign --new witness.example.com/w1 > witness.keys
  ledger audit cosign --witness-key witness.key --key "$(cat log.vkey)" --state witnessed.checkpoint --out cosigned.checkpoint`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if newName != "" {
				skey, vkey, err := translog.GenerateWitnessKey(newName)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%s\n%s\n", skey, vkey)
				return nil
			}
			if strings.TrimSpace(witnessKey) == "" || strings.TrimSpace(state) == "" {
				return domain.Errorf(domain.EINVALID, "--witness-key and --state are required (ledger audit cosign --new NAME makes a key)")
			}
			w, err := translog.LoadCosigner(witnessKey)
			if err != nil {
				return err
			}
			lc, err := loadLogConfig(a.env)
			if err != nil {
				return err
			}
			v, err := lc.verifierKey(logKey)
			if err != nil {
				return err
			}
			if v == nil {
				return domain.Errorf(domain.EINVALID, "no verifier key: give --key (ledger audit key prints it) or set LEDGER_LOG_KEY")
			}
			var old *translog.Checkpoint
			prev, err := os.ReadFile(state)
			switch {
			case errors.Is(err, os.ErrNotExist):
			case err != nil:
				return domain.Errorf(domain.EINVALID, "--state: %v", err)
			default:
				c, err := v.Open(prev)
				if err != nil {
					return domain.Errorf(domain.EINVALID, "--state does not hold a checkpoint signed by the log: %s", domain.ErrorMessage(err))
				}
				old = &c
			}
			svc, db, err := a.openAuditKey(cmd, nil, v)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx := cmd.Context()
			latest, err := svc.Checkpoint(ctx, a.cliActor(), 0)
			if err != nil {
				return err
			}
			cur, err := v.Open([]byte(latest.Note))
			if err != nil {
				fmt.Fprintln(a.stdout, "FAIL: the log's latest checkpoint: "+domain.ErrorMessage(err))
				return exitCode(1)
			}
			if old != nil {
				var proof tlog.TreeProof
				if old.Size > 0 && old.Size < cur.Size {
					p, err := svc.Consistency(ctx, a.cliActor(), old.Size, cur.Size)
					if err != nil {
						return err
					}
					for _, s := range p.Proof {
						h, err := base64.StdEncoding.DecodeString(s)
						if err != nil || len(h) != tlog.HashSize {
							fmt.Fprintln(a.stdout, "FAIL: the consistency proof is malformed")
							return exitCode(1)
						}
						proof = append(proof, tlog.Hash(h))
					}
				}
				if err := translog.CheckExtends(*old, cur, proof); err != nil {
					fmt.Fprintln(a.stdout, "FAIL: "+domain.ErrorMessage(err))
					return exitCode(1)
				}
			}
			cosigned, err := translog.Cosign([]byte(latest.Note), v, w)
			if err != nil {
				return err
			}
			if err := translog.WriteFile(state, cosigned); err != nil {
				return domain.Errorf(domain.EINVALID, "--state: %v", err)
			}
			if out == "" {
				_, err = a.stdout.Write(cosigned)
			} else if err = os.WriteFile(out, cosigned, 0o644); err != nil {
				return domain.Errorf(domain.EINVALID, "--out: %v", err)
			}
			if old == nil {
				fmt.Fprintf(a.stderr, "cosigned the tree of %d as %s (the first: nothing to check it against)\n", cur.Size, w.Name())
			} else {
				fmt.Fprintf(a.stderr, "cosigned the tree of %d as %s: it extends the last cosigned, of %d\n", cur.Size, w.Name(), old.Size)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&witnessKey, "witness-key", "", "the witness's signing key, or a file holding it")
	f.StringVar(&logKey, "key", "", "the log's verifier key (name+hash+key), or a file holding it (default: LEDGER_LOG_KEY's)")
	f.StringVar(&state, "state", "", "the file keeping the last cosigned checkpoint (created on the first run)")
	f.StringVar(&out, "out", "", "write the cosigned checkpoint to this file instead of stdout")
	f.StringVar(&newName, "new", "", "generate a witness key with this name and print it")
	return cmd
}
