package packet

import (
	"context"
	"errors"
	"testing"
	"time"

	"hongbao/internal/dtx"
	"hongbao/internal/pgtest"
)

type allMembers struct{}

func (allMembers) IsMember(context.Context, int64, int64) (bool, error) { return true, nil }

// Admission control turns grabs away at once when more are queued than
// shares are left, and answers "sold out" without queueing once it is empty.
func TestAdmissionControl(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDB(t, pgtest.Schema{Name: "packet", Migrations: Migrations()})
	s, err := New(db, Options{Set: 1, Members: allMembers{}})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Close()
	p := Packet{ID: mustID(t, s), Kind: Lucky, Sender: 1, Group: 2, Amount: 100, Shares: 3, ExpiresAt: time.Now().Add(time.Hour)}
	for _, op := range []dtx.Op{dtx.OpTry, dtx.OpConfirm} {
		if err := s.Participant().Do(t.Context(), dtx.Call{GID: "adm", Branch: "2", Op: op, Payload: Payload(p)}); err != nil {
			t.Fatal(err)
		}
	}
	lv, err := s.owned(t.Context(), p.ID)
	if err != nil {
		t.Fatal(err)
	}
	lv.waiting.Store(3) // three grabs already queued for three shares
	if _, err := s.Grab(t.Context(), p.ID, 10); !errors.Is(err, ErrBusy) {
		t.Fatalf("grab beyond the shares left: %v, want ErrBusy", err)
	}
	lv.waiting.Store(0)
	for u := int64(10); u < 13; u++ {
		if _, err := s.Grab(t.Context(), p.ID, u); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Grab(t.Context(), p.ID, 13); !errors.Is(err, ErrSoldOut) {
		t.Fatalf("grab of an empty packet: %v", err)
	}
	if got := s.Rejected.Load(); got != 2 {
		t.Fatalf("rejected %d grabs, want 2", got)
	}
	// Lists.
	sent, err := s.Sent(t.Context(), 1, 0, 10)
	if err != nil || len(sent) != 1 || sent[0].ID != p.ID || sent[0].State != StateFinished {
		t.Fatalf("sent = %+v, %v", sent, err)
	}
	got, err := s.Received(t.Context(), 11, time.Time{}, 0, 10)
	if err != nil || len(got) != 1 || got[0].PacketID != p.ID {
		t.Fatalf("received = %+v, %v", got, err)
	}
}

func mustID(t testing.TB, s *Set) int64 {
	t.Helper()
	id, err := s.NewID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id
}
