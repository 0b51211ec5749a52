package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Dead letters are the messages parked on a dead-letter subject of the
// main stream (hb.dead.X, parked from hb.X). They stay in the stream as
// long as everything else (its MaxAge); an operator's re-drive publishes
// one back to its subject and records that with a marker message on
// hb.redriven.SEQ in the same stream, so the list shows it.
const (
	deadPrefix     = "hb.dead."
	redrivenPrefix = "hb.redriven."
)

// ErrNoDeadLetter: no dead letter has that sequence number.
var ErrNoDeadLetter = errors.New("bus: no such dead letter")

// DeadLetter is one parked message.
type DeadLetter struct {
	Seq uint64 `json:"seq"`
	// Subject is the dead-letter subject it was parked on; Origin the
	// subject it came from, where a re-drive publishes it.
	Subject string    `json:"subject"`
	Origin  string    `json:"origin"`
	At      time.Time `json:"at"`
	Data    []byte    `json:"-"`
	// Redriven counts the operators' re-drives; RedrivenAt is the last.
	Redriven   int        `json:"redriven"`
	RedrivenAt *time.Time `json:"redriven_at,omitempty"`
}

type redriveMark struct {
	Count int       `json:"count"`
	At    time.Time `json:"at"`
}

// DeadSubject is the dead-letter subject of a subject of the main stream.
func DeadSubject(subject string) string { return deadPrefix + strings.TrimPrefix(subject, "hb.") }

// DeadLetters lists up to limit dead letters with a sequence above after,
// oldest first.
func (b *Bus) DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetter, error) {
	st, err := b.js.Stream(ctx, Stream)
	if err != nil {
		return nil, fmt.Errorf("bus: dead letters: %w", err)
	}
	var out []DeadLetter
	seq := after + 1
	for len(out) < limit {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(deadPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bus: dead letters after %d: %w", seq, err)
		}
		d, err := b.deadLetter(ctx, st, m)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
		seq = m.Sequence + 1
	}
	return out, nil
}

// DeadLetter reads one dead letter by its sequence number.
func (b *Bus) DeadLetter(ctx context.Context, seq uint64) (DeadLetter, error) {
	st, err := b.js.Stream(ctx, Stream)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: dead letter: %w", err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) || (err == nil && !strings.HasPrefix(m.Subject, deadPrefix)) {
		return DeadLetter{}, fmt.Errorf("%w: %d", ErrNoDeadLetter, seq)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("bus: dead letter %d: %w", seq, err)
	}
	return b.deadLetter(ctx, st, m)
}

func (b *Bus) deadLetter(ctx context.Context, st jetstream.Stream, m *jetstream.RawStreamMsg) (DeadLetter, error) {
	d := DeadLetter{Seq: m.Sequence, Subject: m.Subject, Origin: "hb." + strings.TrimPrefix(m.Subject, deadPrefix), At: m.Time.UTC(), Data: m.Data}
	mark, err := st.GetLastMsgForSubject(ctx, redrivenPrefix+strconv.FormatUint(m.Sequence, 10))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return d, nil
	}
	if err != nil {
		return d, fmt.Errorf("bus: re-drives of dead letter %d: %w", m.Sequence, err)
	}
	var rm redriveMark
	if err := json.Unmarshal(mark.Data, &rm); err == nil {
		at := rm.At.UTC()
		d.Redriven, d.RedrivenAt = rm.Count, &at
	}
	return d, nil
}

// Redrive publishes a dead letter back to the subject it came from and
// records the re-drive. Its consumer applies it as any delivery: the
// receiver's idempotency makes a second re-drive change nothing.
func (b *Bus) Redrive(ctx context.Context, seq uint64) (DeadLetter, error) {
	d, err := b.DeadLetter(ctx, seq)
	if err != nil {
		return d, err
	}
	n := d.Redriven + 1
	if err := b.Publish(ctx, []Msg{{Subject: d.Origin, ID: fmt.Sprintf("redrive:%d:%d", seq, n), Data: d.Data}}); err != nil {
		return d, fmt.Errorf("bus: re-drive dead letter %d: %w", seq, err)
	}
	now := time.Now().UTC()
	mark, _ := json.Marshal(redriveMark{Count: n, At: now})
	if err := b.Publish(ctx, []Msg{{Subject: redrivenPrefix + strconv.FormatUint(seq, 10), ID: fmt.Sprintf("redriven:%d:%d", seq, n), Data: mark}}); err != nil {
		return d, fmt.Errorf("bus: record re-drive of dead letter %d: %w", seq, err)
	}
	d.Redriven, d.RedrivenAt = n, &now
	return d, nil
}

// DeadCounts counts the dead letters in the stream and those of them an
// operator has not re-driven.
func (b *Bus) DeadCounts(ctx context.Context) (total, open int64, err error) {
	st, err := b.js.Stream(ctx, Stream)
	if err != nil {
		return 0, 0, fmt.Errorf("bus: count dead letters: %w", err)
	}
	count := func(filter string) (int64, error) {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return 0, err
		}
		var n int64
		for _, k := range info.State.Subjects {
			n += int64(k)
		}
		return n, nil
	}
	if total, err = count(deadPrefix + ">"); err != nil {
		return 0, 0, fmt.Errorf("bus: count dead letters: %w", err)
	}
	// One marker subject per re-driven letter (each holds its re-drives).
	marked, err := st.Info(ctx, jetstream.WithSubjectFilter(redrivenPrefix+">"))
	if err != nil {
		return 0, 0, fmt.Errorf("bus: count re-driven dead letters: %w", err)
	}
	return total, max(0, total-int64(len(marked.State.Subjects))), nil
}
