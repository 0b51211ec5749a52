package ledger_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/pgtest"
)

// Go benchmarks of the ledger paths; `hongbao bench ledger` measures the
// same with baselines and durable settings. Set HONGBAO_PGTEST_DURABLE=1
// for fsync on here too.
func benchLedger(b *testing.B, users int) *ledger.Ledger {
	l, err := ledger.New(b.Context(), pgtest.NewDB(b, schema), ledger.Options{})
	if err != nil {
		b.Fatal(err)
	}
	credits := make([]ledger.Credit, users)
	for i := range credits {
		credits[i] = ledger.Credit{Key: fmt.Sprint("fund-", i), From: ledger.External, User: int64(i + 1), Amount: 1_000_000, Kind: ledger.KindCredit}
	}
	if _, err := l.ApplyCredits(b.Context(), credits); err != nil {
		b.Fatal(err)
	}
	return l
}

func BenchmarkTransfer(b *testing.B) {
	l := benchLedger(b, 1000)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			from, to := 1+i%1000, 1+(i*7+3)%1000
			if from == to {
				continue
			}
			if _, err := l.Transfer(b.Context(), ledger.TransferRequest{Key: fmt.Sprint("t-", i), From: ledger.User(from), To: ledger.User(to), Amount: 1}); err != nil {
				b.Error(err)
			}
		}
	})
}

func BenchmarkApplyCredits(b *testing.B) {
	for _, size := range []int{1, 100, 500} {
		b.Run(fmt.Sprint("batch=", size), func(b *testing.B) {
			l := benchLedger(b, 1)
			if _, err := l.Transfer(b.Context(), ledger.TransferRequest{Key: "escrow", From: ledger.External, To: ledger.ClearingPackets, Amount: money.Amount(1) << 50}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				batch := make([]ledger.Credit, size)
				for j := range batch {
					batch[j] = ledger.Credit{Key: fmt.Sprintf("c-%d-%d", i, j), From: ledger.ClearingPackets, User: int64(1 + (i*size+j)%5000), Amount: 1, Kind: ledger.KindCredit}
				}
				if _, err := l.ApplyCredits(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "credits/s")
		})
	}
}
