package clerkapi_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/clerk-ledger/clerk-ledger/clerkapi"
	"github.com/clerk-ledger/clerk-ledger/clerkapi/clerkapitest"
	"golang.org/x/time/rate"
)

// BenchmarkListUsers pages through 100,000 users from the fake (real HTTP
// over loopback, 500 a page, two alternating Pages as an importer would
// use them). One op is the whole pass; it reports users/s and allocations
// per user. The fake runs in the same process and on the same cores, so
// the figures include its serving cost (it writes stored bytes, allocating
// little), and B/op counts both sides.
func BenchmarkListUsers(b *testing.B) {
	const users = 100_000
	s := clerkapitest.New(clerkapitest.Options{Users: users, Seed: 42})
	defer s.Close()
	c, err := clerkapi.New(clerkapi.Config{SecretKey: s.SecretKey(), BaseURL: s.URL(), RateLimit: rate.Inf})
	if err != nil {
		b.Fatal(err)
	}
	var bytesPerPass int64
	for _, e := range s.List() {
		bytesPerPass += int64(len(e.Raw))
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx := context.Background()
	var pages [2]clerkapi.Page
	b.ReportAllocs()
	b.SetBytes(bytesPerPass)
	passes := 0
	for b.Loop() {
		n := 0
		for i, off := 0, 0; ; i++ {
			p := &pages[i%2]
			if err := c.ListUsersInto(ctx, p, off, clerkapi.MaxLimit); err != nil {
				b.Fatal(err)
			}
			n += len(p.Users)
			if len(p.Failures) > 0 {
				b.Fatal(p.Failures[0].Err)
			}
			if p.Last() {
				break
			}
			off = p.Next()
		}
		if n != users {
			b.Fatalf("listed %d users", n)
		}
		passes++
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(users*passes)/b.Elapsed().Seconds(), "users/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(users*passes), "allocs/user")
	b.ReportMetric(float64(after.HeapInuse)/(1<<20), "heap_inuse_MB") // the fake's 100k users included
}
