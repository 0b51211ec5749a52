package ledger_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"hongbao/internal/ledger"
	"hongbao/internal/money"
)

// model is the expected books, updated only by operations that really
// applied (Replayed false), so any double application shows as a difference.
type model struct {
	mu       sync.Mutex
	balance  map[ledger.Account]money.Amount
	held     map[ledger.Account]money.Amount
	holds    []heldRef // holds that exist
	results  map[string]string
	applied  atomic.Int64
	replayed atomic.Int64
}

func (m *model) once(t *testing.T, key, result string, replayed bool, apply func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if prev, ok := m.results[key]; ok {
		if prev != result {
			t.Errorf("key %s answered %s, earlier %s", key, result, prev)
		}
	}
	if replayed {
		m.replayed.Add(1)
		return
	}
	if _, ok := m.results[key]; ok {
		t.Errorf("key %s applied twice", key)
		return
	}
	m.results[key] = result
	m.applied.Add(1)
	apply()
}

func TestConcurrentOperations(t *testing.T) {
	t.Parallel()
	l, _ := newLedger(t)
	ctx := t.Context()
	const users, workers, opsPer = 10, 64, 60
	m := &model{balance: map[ledger.Account]money.Amount{}, held: map[ledger.Account]money.Amount{}, results: map[string]string{}}
	for u := int64(1); u <= users; u++ {
		if _, err := l.Deposit(ctx, fmt.Sprint("fund-", u), u, 5000); err != nil {
			t.Fatal(err)
		}
		m.balance[ledger.User(u)] = 5000
		m.balance[ledger.External] -= 5000
	}

	// A watcher proves available never goes negative while money moves.
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			var neg int
			if err := l.DB().QueryRow(ctx, `SELECT count(*) FROM accounts WHERE kind = 'user' AND balance - held < 0`).Scan(&neg); err != nil {
				return
			}
			if neg > 0 {
				t.Errorf("%d wallets with negative available", neg)
			}
		}
	})

	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range opsPer {
				// Keys shared between workers, with the request derived from
				// the key: concurrent duplicates of the same request.
				n := r.IntN(workers * opsPer / 3)
				kr := rand.New(rand.NewPCG(uint64(n), 99))
				from := ledger.User(int64(kr.IntN(users) + 1))
				to := ledger.User(int64(kr.IntN(users) + 1))
				amt := money.Amount(kr.IntN(900) + 1)
				switch op := kr.IntN(10); {
				case op < 4:
					if from == to {
						continue
					}
					key := fmt.Sprint("t-", n)
					res, err := l.Transfer(ctx, ledger.TransferRequest{Key: key, From: from, To: to, Amount: amt})
					if errors.Is(err, ledger.ErrInsufficientFunds) {
						continue
					}
					if err != nil {
						t.Errorf("transfer: %v", err)
						continue
					}
					m.once(t, key, fmt.Sprint(res.PostingID), res.Replayed, func() {
						m.balance[from] -= amt
						m.balance[to] += amt
					})
				case op < 7:
					key := fmt.Sprint("h-", n)
					res, err := l.Hold(ctx, ledger.HoldRequest{Key: key, User: int64(from), Amount: amt})
					if errors.Is(err, ledger.ErrInsufficientFunds) {
						continue
					}
					if err != nil {
						t.Errorf("hold: %v", err)
						continue
					}
					m.once(t, key, fmt.Sprint(res.HoldID), res.Replayed, func() {
						m.held[from] += amt
						m.holds = append(m.holds, heldRef{key, int64(from), amt})
					})
				default:
					m.mu.Lock()
					if len(m.holds) == 0 {
						m.mu.Unlock()
						continue
					}
					h := m.holds[r.IntN(len(m.holds))]
					m.mu.Unlock()
					hk, owner, hamt := h.key, h.owner, int64(h.amount)
					// Each worker resolves with its own key: racing resolutions
					// of one hold, exactly one may win.
					key := fmt.Sprintf("r-%d-%d", w, i)
					if r.IntN(2) == 0 {
						posted := money.Amount(kr.IntN(int(hamt)) + 1)
						dest := ledger.ClearingPackets
						res, err := l.Post(ctx, ledger.PostRequest{Key: key, HoldKey: hk, To: dest, Amount: posted})
						if errors.Is(err, ledger.ErrHoldResolved) {
							continue
						}
						if err != nil {
							t.Errorf("post: %v", err)
							continue
						}
						m.once(t, key, fmt.Sprint(res.PostingID), res.Replayed, func() {
							m.balance[ledger.User(owner)] -= posted
							m.held[ledger.User(owner)] -= money.Amount(hamt)
							m.balance[dest] += posted
						})
					} else {
						res, err := l.Void(ctx, ledger.VoidRequest{Key: key, HoldKey: hk})
						if errors.Is(err, ledger.ErrHoldResolved) {
							continue
						}
						if err != nil {
							t.Errorf("void: %v", err)
							continue
						}
						m.once(t, key, fmt.Sprint(res.HoldID), res.Replayed, func() {
							m.held[ledger.User(owner)] -= money.Amount(hamt)
						})
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	watch.Wait()

	t.Logf("applied %d operations, %d answered as replays", m.applied.Load(), m.replayed.Load())
	if m.replayed.Load() == 0 || m.applied.Load() < workers*opsPer/8 {
		t.Fatalf("the run did not exercise enough: applied %d, replayed %d", m.applied.Load(), m.replayed.Load())
	}
	for u := int64(1); u <= users; u++ {
		wantWallet(t, l, u, m.balance[ledger.User(u)], m.held[ledger.User(u)])
	}
	for _, sys := range ledger.SystemAccounts {
		if b, err := l.SystemBalance(ctx, sys); err != nil || b != m.balance[sys] {
			t.Errorf("%s = %s, want %s (%v)", sys, b, m.balance[sys], err)
		}
	}
	mustCheck(t, l)
}

type heldRef struct {
	key    string
	owner  int64
	amount money.Amount
}
