package packet_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/packet"
	"hongbao/internal/pgtest"
)

// BenchmarkGrab compares the engine with the plain way on the same
// database: SELECT ... FOR UPDATE on the packet row, one transaction per
// grab. `hongbao bench hot-packet` measures the same with durable settings.
func BenchmarkGrab(b *testing.B) {
	c := &clock{t: time.Now()}
	db := pgtest.NewDB(b, schema)
	limits := packet.DefaultLimits
	limits.MaxShares = 2_000_000
	limits.MaxAmount = 1 << 40
	s, err := packet.New(db, packet.Options{Set: 3, Limits: limits, Members: everyone{}, Now: c.now})
	if err == nil {
		s.Start()
	}
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	mk := func() packet.Packet {
		return send(b, s, packet.Packet{Kind: packet.Lucky, Sender: 1, Group: 9, Amount: 20_000_000, Shares: 2_000_000}, c)
	}
	b.Run("engine", func(b *testing.B) {
		p := mk()
		var user atomic.Int64
		b.SetParallelism(64)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Grab(b.Context(), p.ID, user.Add(1)); err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grabs/s")
	})
	b.Run("select-for-update", func(b *testing.B) {
		p := mk()
		var user atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				u := user.Add(1)
				err := pgx.BeginFunc(b.Context(), db, func(tx pgx.Tx) error {
					var count int
					var remaining int64
					if err := tx.QueryRow(b.Context(), `SELECT remaining_count, remaining_amount FROM packets WHERE id = $1 FOR UPDATE`, p.ID).Scan(&count, &remaining); err != nil {
						return err
					}
					if _, err := tx.Exec(b.Context(), `UPDATE packets SET remaining_count = remaining_count - 1, remaining_amount = remaining_amount - 1, claimed = claimed + 1 WHERE id = $1`, p.ID); err != nil {
						return err
					}
					_, err := tx.Exec(b.Context(), `INSERT INTO claims (id, packet_id, user_id, seq, amount, created_at, packet_at) VALUES (nextval('claim_ids') * 1024 + 3, $1, $2, $3, 1, now(), $4)`,
						p.ID, u, p.Shares-count+1, p.CreatedAt)
					return err
				})
				if err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grabs/s")
	})
}
