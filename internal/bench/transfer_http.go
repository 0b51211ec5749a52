package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"hongbao/internal/client"
	"hongbao/internal/httpapi"
	"hongbao/internal/money"
)

// HTTPTransferReport is `bench transfer --url`: transfers through a
// running server's API.
type HTTPTransferReport struct {
	URL        string       `json:"url"`
	Transfers  Result       `json:"transfers"`
	Committed  int64        `json:"committed"`
	Cancelled  int64        `json:"cancelled"`
	Pending    int64        `json:"pending"`
	Deposited  money.Amount `json:"deposited"`
	Wallets    money.Amount `json:"wallets"`
	Reconciled bool         `json:"reconciled"`
}

// benchTransferHTTP drives POST /v1/transfers between fresh users of a
// running server and checks that their money adds up afterwards.
func benchTransferHTTP(ctx context.Context, url, secret string, users, workers int, d time.Duration, firstUser int64, asJSON bool, out io.Writer) error {
	if len(secret) < httpapi.MinSecret {
		return errors.New("--url needs the server's --token-secret (HONGBAO_TOKEN_SECRET) to act as many users")
	}
	b := client.NewUsers(url, []byte(secret), workers)
	progress := out
	if asJSON {
		progress = io.Discard
	}
	rep := HTTPTransferReport{URL: url}
	const funding = money.Amount(1000_00)
	if err := Each(users, workers, func(i int) error {
		u := firstUser + int64(i)
		_, err := b.Call(ctx, "POST", "/v1/admin/deposits", 0, fmt.Sprint("bench-transfer-fund-", u), map[string]any{"user": u, "amount": funding}, nil)
		return err
	}); err != nil {
		return err
	}
	rep.Deposited = funding * money.Amount(users)
	fmt.Fprintf(progress, "transfers through %s: %d users, %d clients, %s\n", url, users, workers, d)
	rep.Transfers = Run(ctx, workers, d, func(ctx context.Context, w, i int) (int, error) {
		r := rand.New(rand.NewPCG(uint64(w), uint64(i)))
		from := firstUser + int64(r.IntN(users))
		to := firstUser + int64(r.IntN(users-1))
		if to >= from {
			to++
		}
		var a txAnswer
		status, err := b.Call(ctx, "POST", "/v1/transfers", from, fmt.Sprintf("bench-%d-%d-%d", time.Now().UnixNano(), w, i), map[string]any{"to": to, "amount": "0.01"}, &a)
		switch {
		case err == nil && status == 200:
			atomic.AddInt64(&rep.Committed, 1)
		case err == nil && status == 202:
			atomic.AddInt64(&rep.Pending, 1)
		case status == 409:
			atomic.AddInt64(&rep.Cancelled, 1)
			return 1, nil
		default:
			return 1, err
		}
		return 1, nil
	})
	fmt.Fprintf(progress, "  %-30s %8.0f/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n", "transfers (TCC when cross-shard)", rep.Transfers.PerSec, rep.Transfers.P50ms, rep.Transfers.P99ms, rep.Transfers.Errors)
	// Money among the bench's users is conserved once nothing is pending.
	deadline := time.Now().Add(time.Minute)
	for {
		var page struct {
			Transactions []json.RawMessage `json:"transactions"`
		}
		if _, err := b.Call(ctx, "GET", "/v1/admin/transactions?unfinished=true&limit=1", 0, "", nil, &page); err != nil {
			return err
		}
		if len(page.Transactions) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i := range users {
		var w struct {
			Balance money.Amount `json:"balance"`
		}
		if _, err := b.Call(ctx, "GET", "/v1/wallet", firstUser+int64(i), "", nil, &w); err != nil {
			return err
		}
		rep.Wallets += w.Balance
	}
	rep.Reconciled = rep.Wallets == rep.Deposited
	if asJSON {
		return json.NewEncoder(out).Encode(rep)
	}
	fmt.Fprintf(out, "%d committed, %d cancelled, %d pending; wallets %s = deposits %s: %v\n", rep.Committed, rep.Cancelled, rep.Pending, rep.Wallets, rep.Deposited, rep.Reconciled)
	if !rep.Reconciled {
		return errors.New("money did not reconcile")
	}
	return nil
}

// txAnswer is the API's answer to a transfer.
type txAnswer struct {
	GID     string `json:"gid"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
}
