package userkeys

import (
	"bytes"
	"fmt"
	"testing"
)

// BenchmarkIngestNewUsers is what sealing costs the service for a stream of
// deliveries each about a new user, as bench ingest sends: a fresh key made,
// the body sealed under it and the key kept once its row committed (the
// event store), then the body opened by the users projector lag deliveries
// later (Keyring.Open, the key checked against the wrapped key read with
// the row).
func BenchmarkIngestNewUsers(b *testing.B) {
	for _, lag := range []int{100, 2000} {
		b.Run(fmt.Sprintf("lag=%d", lag), func(b *testing.B) {
			k := newKeyring(b)
			body := bytes.Repeat([]byte("x"), 1290)
			type row struct {
				user, id        string
				wrapped, sealed []byte
			}
			ring := make([]row, lag)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for i := range b.N {
				r := row{user: fmt.Sprintf("user_2%027d", i), id: fmt.Sprintf("msg_%027d", i)}
				f, err := k.NewFresh(r.user)
				if err != nil {
					b.Fatal(err)
				}
				if r.sealed, _, err = k.SealFresh(f, r.user, r.id, body); err != nil {
					b.Fatal(err)
				}
				k.Keep(r.user, f)
				r.wrapped = f.Wrapped
				old := ring[i%lag]
				ring[i%lag] = r
				if old.user == "" {
					continue
				}
				if _, _, _, err := k.Open(old.user, old.wrapped, old.id, old.sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
