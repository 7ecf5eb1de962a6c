package userkeys

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkOpen opens sealed bodies of 1.3 KB (the size of a Clerk user
// event) in a random order over many users, as a rebuild does: the cost of
// opening one body, key look-up included.
func BenchmarkOpen(b *testing.B) {
	for _, users := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("users=%d", users), func(b *testing.B) {
			k := newKeyring(b)
			type row struct {
				user, id        string
				wrapped, sealed []byte
			}
			wrapped := make([][]byte, users)
			var err error
			for u := range users {
				if wrapped[u], err = k.NewDataKey(fmt.Sprintf("user_2%027d", u)); err != nil {
					b.Fatal(err)
				}
			}
			body := bytes.Repeat([]byte("x"), 1290)
			rng := rand.New(rand.NewPCG(1, 2))
			rows := make([]row, 20000)
			for i := range rows {
				u := rng.IntN(users)
				r := row{user: fmt.Sprintf("user_2%027d", u), id: fmt.Sprintf("msg_%027d", i), wrapped: wrapped[u]}
				if r.sealed, _, err = k.Seal(r.user, r.wrapped, r.id, body); err != nil {
					b.Fatal(err)
				}
				rows[i] = r
			}
			b.Run("Keyring", func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				for i := range b.N {
					r := &rows[i%len(rows)]
					if _, _, _, err := k.Open(r.user, r.wrapped, r.id, r.sealed); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Opener", func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				o := k.Opener()
				for i := range b.N {
					r := &rows[i%len(rows)]
					if _, _, _, err := o.Open(r.user, r.wrapped, r.id, r.sealed); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
