package clerkgen

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/clerk-ledger/clerk-ledger/domain"
)

// HistoryOptions shapes a synthetic ledger history.
type HistoryOptions struct {
	Users  int    // Clerk users
	Events int    // deliveries in all, duplicates and non-user events included
	Seed   uint64 // same seed, same history (ids, bodies, order)
	// Start is when the first user signs up; histories span Span from it.
	Start time.Time
	Span  time.Duration
	// Ordered keeps deliveries in the order they happened instead of
	// shuffling them (Svix's order is best effort only), and makes no
	// duplicates.
	Ordered bool
}

// Rates of the synthetic history: users deleted in the end, deliveries
// that repeat an earlier event's content under a new svix-id, deliveries of
// non-user events (session.created, email.created), phone-only users.
const (
	deleteRate    = 0.05
	duplicateRate = 0.02
	otherRate     = 0.10
	phoneOnlyRate = 0.05
)

type entryKind uint8

const (
	kindCreated entryKind = iota
	kindUpdated
	kindDeleted
	kindSession
	kindEmail
)

// entry is one planned delivery: version k of user's history.
type entry struct {
	user int32
	k    int32
	kind entryKind
	dup  bool
}

// History is a planned synthetic history: who signs up, updates and deletes
// their account when, in which order the deliveries arrive. Each delivery is
// built on demand by Delivery, so a history of millions of events takes a
// few bytes per event until it is built. It is safe for concurrent use.
type History struct {
	o       HistoryOptions
	plan    []entry
	updates []int32 // updates per user
	deleted []bool
	signer  *Signer
}

// NewHistory plans a history. Every user gets a user.created; 5% are deleted
// in the end; the other user events are user.updated spread at random over
// the users; 2% of deliveries repeat an earlier one's content (unless
// Ordered) and 10% are session or email events. signer, when not nil, signs
// each delivery as Svix would. It fails when Events is too small to create
// every user.
func NewHistory(o HistoryOptions, signer *Signer) (*History, error) {
	if o.Users <= 0 {
		return nil, fmt.Errorf("history needs at least one user")
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if o.Span <= 0 {
		o.Span = 365 * 24 * time.Hour
	}
	r := rand.New(rand.NewPCG(o.Seed, 0x6c6564676572))
	h := &History{o: o, updates: make([]int32, o.Users), deleted: make([]bool, o.Users), signer: signer}
	others := int(float64(o.Events) * otherRate)
	dups := 0
	if !o.Ordered {
		dups = int(float64(o.Events) * duplicateRate)
	}
	deletes := int(float64(o.Users) * deleteRate)
	core := o.Events - others - dups
	if core < o.Users+deletes {
		return nil, fmt.Errorf("%d events are too few for %d users (need at least %d)", o.Events, o.Users, int(float64(o.Users+deletes)/(1-otherRate-duplicateRate))+1)
	}
	h.plan = make([]entry, 0, o.Events)
	for u := range o.Users {
		h.plan = append(h.plan, entry{user: int32(u), kind: kindCreated})
	}
	for _, u := range r.Perm(o.Users)[:deletes] {
		h.deleted[u] = true
		h.plan = append(h.plan, entry{user: int32(u), kind: kindDeleted})
	}
	for range core - o.Users - deletes {
		u := r.IntN(o.Users)
		h.updates[u]++
		h.plan = append(h.plan, entry{user: int32(u), k: h.updates[u], kind: kindUpdated})
	}
	for i := range others {
		kind := kindSession
		if i%3 == 2 {
			kind = kindEmail
		}
		h.plan = append(h.plan, entry{user: int32(r.IntN(o.Users)), k: int32(i), kind: kind})
	}
	for range dups {
		e := h.plan[r.IntN(len(h.plan))]
		e.dup = true
		h.plan = append(h.plan, e)
	}
	if o.Ordered {
		// The order things happened in: by time, then plan order.
		times := make([]int64, len(h.plan))
		for i, e := range h.plan {
			times[i] = h.at(e).UnixMilli()
		}
		idx := make([]int, len(h.plan))
		for i := range idx {
			idx[i] = i
		}
		sortByKey(idx, times)
		sorted := make([]entry, len(h.plan))
		for i, j := range idx {
			sorted[i] = h.plan[j]
		}
		h.plan = sorted
	} else {
		r.Shuffle(len(h.plan), func(i, j int) { h.plan[i], h.plan[j] = h.plan[j], h.plan[i] })
	}
	return h, nil
}

func sortByKey(idx []int, key []int64) {
	// A stable merge sort keeps plan order for equal times.
	tmp := make([]int, len(idx))
	var sort func(lo, hi int)
	sort = func(lo, hi int) {
		if hi-lo < 2 {
			return
		}
		mid := (lo + hi) / 2
		sort(lo, mid)
		sort(mid, hi)
		i, j, k := lo, mid, lo
		for i < mid && j < hi {
			if key[idx[j]] < key[idx[i]] {
				tmp[k] = idx[j]
				j++
			} else {
				tmp[k] = idx[i]
				i++
			}
			k++
		}
		for ; i < mid; i++ {
			tmp[k] = idx[i]
			k++
		}
		for ; j < hi; j++ {
			tmp[k] = idx[j]
			k++
		}
		copy(idx[lo:hi], tmp[lo:hi])
	}
	sort(0, len(idx))
}

// Len is the number of deliveries.
func (h *History) Len() int { return len(h.plan) }

// userRand is the random source of user u's facts (the same for every
// delivery about u).
func (h *History) userRand(u int32, salt uint64) *rand.Rand {
	return rand.New(rand.NewPCG(h.o.Seed^uint64(u)*0x9e3779b97f4a7c15, salt))
}

// created is when user u signed up; gap is the time between its versions.
func (h *History) created(u int32) (time.Time, time.Duration) {
	r := h.userRand(u, 1)
	at := h.o.Start.Add(time.Duration(r.Int64N(int64(h.o.Span / 2))))
	gap := time.Duration(1+r.Int64N(72*60)) * time.Minute
	return at.Truncate(time.Millisecond), gap
}

// at is when e happened.
func (h *History) at(e entry) time.Time {
	c, gap := h.created(e.user)
	switch e.kind {
	case kindUpdated:
		return c.Add(time.Duration(e.k) * gap)
	case kindDeleted:
		return c.Add(time.Duration(h.updates[e.user]+1) * gap)
	case kindSession, kindEmail:
		return c.Add(time.Duration(e.k%97) * gap / 3)
	}
	return c
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis", "Radia", "Linus", "Hedy", "Tim", "Katherine", "Guido"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Ritchie", "Perlman", "Torvalds", "Lamarr", "Berners-Lee", "Johnson", "van Rossum"}
	plans      = []string{"free", "pro", "team", "enterprise"}
)

// user returns user u as of version k.
func (h *History) user(u int32, k int32) User {
	base := h.userRand(u, 2)
	id := "user_" + randomID(base)
	phoneOnly := base.Float64() < phoneOnlyRate
	noNames := base.Float64() < 0.1
	first, last := firstNames[base.IntN(len(firstNames))], lastNames[base.IntN(len(lastNames))]
	r := h.userRand(u, 3+uint64(k))
	if k > 0 && r.IntN(4) == 0 { // a name change
		first = firstNames[r.IntN(len(firstNames))]
	}
	if noNames {
		first, last = "", ""
	}
	c, gap := h.created(u)
	usr := User{
		ID: id, FirstName: first, LastName: last,
		PublicMetadata: map[string]any{"plan": plans[(int(k)+int(u))%len(plans)], "onboarded": k > 0},
		CreatedAt:      c, UpdatedAt: c.Add(time.Duration(k) * gap),
	}
	// Addresses are shared by a few users over time, like an address that
	// moves to a new account after the old one is deleted.
	addr := strings.ToLower(first+"."+last) + strconv.Itoa(int(u)%max(1, h.o.Users*49/50))
	if noNames {
		addr = "someone" + strconv.Itoa(int(u)%max(1, h.o.Users*49/50))
	}
	switch {
	case phoneOnly:
		usr.Phone = "+1555" + fmt.Sprintf("%07d", u)
	case k > 0 && k%5 == 0:
		usr.Email = addr + "@work.example.com"
	default:
		usr.Email = addr + "@example.com"
	}
	if k%3 == 1 {
		usr.Username = strings.ToLower(first) + strconv.Itoa(int(u))
	}
	return usr
}

func randomID(r *rand.Rand) string {
	b := make([]byte, 27)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(b)
}

// Delivery builds the i-th delivery in delivery order, signed when the
// History has a signer.
func (h *History) Delivery(i int) (domain.Delivery, error) {
	e := h.plan[i]
	at := h.at(e)
	typ := "user.created"
	switch e.kind {
	case kindUpdated:
		typ = "user.updated"
	case kindDeleted:
		typ = "user.deleted"
	case kindSession:
		typ = "session.created"
	case kindEmail:
		typ = "email.created"
	}
	u := h.user(e.user, e.k)
	if e.kind >= kindSession {
		u = h.user(e.user, 0)
	}
	body, err := Event(typ, u, at)
	if err != nil {
		return domain.Delivery{}, err
	}
	id := "msg_" + randomID(rand.New(rand.NewPCG(h.o.Seed, uint64(i)+1<<40)))
	d := domain.Delivery{ID: id, Timestamp: at.Unix(), Body: body, Type: typ, UserID: u.ID, OccurredAt: at.UTC()}
	if h.signer != nil {
		d.Signature, _ = h.signer.wh.Sign(id, at, body)
	}
	return d, nil
}
