// Package dtxtest is the conformance suite every TCC/Saga participant runs:
// repeated calls, cancel before try, try after cancel, concurrent duplicates.
package dtxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"

	"hongbao/internal/dtx"
)

// Subject is a participant under test.
type Subject struct {
	Participant dtx.Participant
	// Fresh prepares new, identical resources (say, a funded wallet) and
	// returns the payload of a branch on them. Two fresh payloads must
	// start in equal states.
	Fresh func(t *testing.T) json.RawMessage
	// State reads the business state the payload's branch touches, as a
	// comparable value (balances, membership...).
	State func(t *testing.T, payload json.RawMessage) any
	// Saga: the subject has no confirm; its action is OpTry and its
	// compensation OpCancel.
	Saga bool
	// NoReservation: the try reserves nothing (and the cancel releases
	// nothing), so a try after a cancel may succeed; it must still change
	// nothing.
	NoReservation bool
}

var seq atomic.Int64

type branch struct {
	s       Subject
	payload json.RawMessage
	gid     string
}

func (s Subject) branch(t *testing.T) *branch {
	return &branch{s: s, payload: s.Fresh(t), gid: fmt.Sprintf("conf-%s-%d", t.Name(), seq.Add(1))}
}

func (b *branch) do(ctx context.Context, op dtx.Op) error {
	return b.s.Participant.Do(ctx, dtx.Call{GID: b.gid, Branch: "1", Op: op, Payload: b.payload})
}

func (b *branch) must(t *testing.T, op dtx.Op) {
	t.Helper()
	if err := b.do(t.Context(), op); err != nil {
		t.Fatalf("%s %s: %v", b.gid, op, err)
	}
}

func (b *branch) state(t *testing.T) any { return b.s.State(t, b.payload) }

func same(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: state %+v, want %+v", what, got, want)
	}
}

// Run runs the suite against s.
func Run(t *testing.T, s Subject) {
	forward := dtx.OpConfirm
	if s.Saga {
		forward = dtx.OpTry
	}

	t.Run("try then confirm changes state once", func(t *testing.T) {
		once, twice, untouched := s.branch(t), s.branch(t), s.branch(t)
		once.must(t, dtx.OpTry)
		twice.must(t, dtx.OpTry)
		twice.must(t, dtx.OpTry)
		same(t, "after a repeated try", twice.state(t), once.state(t))
		if !s.Saga {
			once.must(t, dtx.OpConfirm)
			twice.must(t, dtx.OpConfirm)
			twice.must(t, dtx.OpConfirm)
			same(t, "after a repeated confirm", twice.state(t), once.state(t))
		}
		if reflect.DeepEqual(once.state(t), untouched.state(t)) {
			t.Fatalf("try%s left no trace in the state: the suite would prove nothing", map[bool]string{false: "+confirm"}[s.Saga])
		}
	})

	t.Run("try then cancel restores the state", func(t *testing.T) {
		b, untouched := s.branch(t), s.branch(t)
		b.must(t, dtx.OpTry)
		b.must(t, dtx.OpCancel)
		b.must(t, dtx.OpCancel)
		same(t, "after try, cancel, cancel", b.state(t), untouched.state(t))
	})

	t.Run("cancel before try is empty and fences the try", func(t *testing.T) {
		b, untouched := s.branch(t), s.branch(t)
		b.must(t, dtx.OpCancel)
		err := b.do(t.Context(), dtx.OpTry)
		if !dtx.IsFailure(err) && !(s.NoReservation && err == nil) {
			t.Fatalf("try after cancel: %v, want a definite failure", err)
		}
		b.must(t, dtx.OpCancel)
		same(t, "after cancel, late try", b.state(t), untouched.state(t))
	})

	t.Run("concurrent duplicates apply once", func(t *testing.T) {
		once, many := s.branch(t), s.branch(t)
		once.must(t, dtx.OpTry)
		if !s.Saga {
			once.must(t, forward)
		}
		phases := []dtx.Op{dtx.OpTry}
		if !s.Saga {
			phases = append(phases, forward)
		}
		for _, op := range phases {
			var wg sync.WaitGroup
			errs := make([]error, 8)
			for i := range errs {
				wg.Go(func() { errs[i] = many.do(t.Context(), op) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("concurrent %s: %v", op, err)
				}
			}
		}
		same(t, "after concurrent duplicates", many.state(t), once.state(t))
	})

	t.Run("concurrent try and cancel end cancelled", func(t *testing.T) {
		b, untouched := s.branch(t), s.branch(t)
		var wg sync.WaitGroup
		wg.Go(func() { _ = b.do(t.Context(), dtx.OpTry) }) // may win or be fenced
		wg.Go(func() {
			if err := b.do(t.Context(), dtx.OpCancel); err != nil {
				t.Errorf("cancel: %v", err)
			}
		})
		wg.Wait()
		b.must(t, dtx.OpCancel) // whichever came first, a cancel after both is a no-op
		if err := b.do(t.Context(), dtx.OpTry); !dtx.IsFailure(err) && err != nil {
			t.Fatalf("try after cancel: %v", err)
		}
		same(t, "after racing try and cancel", b.state(t), untouched.state(t))
	})
}
