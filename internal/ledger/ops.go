package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"hongbao/internal/events"
	"hongbao/internal/money"
	"hongbao/internal/shard"
)

// Posting kinds.
const (
	KindDeposit  = "deposit"
	KindTransfer = "transfer"
	KindHoldPost = "hold_post"
	KindCredit   = "credit"
	KindDebit    = "debit"
	KindRefund   = "refund"
	KindSettle   = "settle"
	// Money through the payment channel: a top-up credited, a withdrawal
	// paid out (a hold post), a withdrawal the channel reversed refunded.
	KindTopUp      = "topup"
	KindWithdrawal = "withdrawal"
	KindReversal   = "reversal"
)

// TransferRequest moves Amount from one account of this shard to another.
type TransferRequest struct {
	Key    string       `json:"-"`
	From   Account      `json:"from"`
	To     Account      `json:"to"`
	Amount money.Amount `json:"amount"`
	// Kind of posting (KindTransfer when empty).
	Kind string `json:"kind"`
	// Reserved: the receiving user's room for Amount was reserved at try
	// (Reserve); this transfer uses it up and is not refused for the limit.
	Reserved bool `json:"-"`
	// Peer is the user on the other side, when the money goes through a
	// clearing account (for statements).
	Peer int64 `json:"-"`
	// Events are written with the posting, in the same transaction.
	Events []events.Event `json:"-"`
}

// TransferResult is what a transfer did.
type TransferResult struct {
	PostingID   int64        `json:"posting_id"`
	Amount      money.Amount `json:"amount"`
	FromBalance money.Amount `json:"from_balance"`
	ToBalance   money.Amount `json:"to_balance"`
	Replayed    bool         `json:"-"`
}

// Transfer moves money between two accounts of the shard. A user's
// available balance never goes below zero (ErrInsufficientFunds).
func (l *Ledger) Transfer(ctx context.Context, req TransferRequest) (TransferResult, error) {
	if req.Kind == "" {
		req.Kind = KindTransfer
	}
	if err := validMove(req.From, req.To, req.Amount); err != nil {
		return TransferResult{}, err
	}
	var res TransferResult
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = l.transferIn(ctx, tx, req)
		return err
	})
	if err != nil {
		return TransferResult{}, fmt.Errorf("transfer %s -> %s (key %q): %w", req.From, req.To, req.Key, err)
	}
	return res, nil
}

// TransferIn is Transfer inside the caller's transaction on this shard's
// database (a local transaction that also writes the caller's rows).
func (l *Ledger) TransferIn(ctx context.Context, tx pgx.Tx, req TransferRequest) (TransferResult, error) {
	if req.Kind == "" {
		req.Kind = KindTransfer
	}
	if err := validMove(req.From, req.To, req.Amount); err != nil {
		return TransferResult{}, err
	}
	res, err := l.transferIn(ctx, tx, req)
	if err != nil {
		return TransferResult{}, fmt.Errorf("transfer %s -> %s (key %q): %w", req.From, req.To, req.Key, err)
	}
	return res, nil
}

func (l *Ledger) transferIn(ctx context.Context, tx pgx.Tx, req TransferRequest) (TransferResult, error) {
	user := int64(req.From)
	if !req.From.IsUser() {
		user = int64(req.To)
	}
	res, replayed, err := idempotent(ctx, tx, req.Key, "transfer", req, &user, func() (TransferResult, error) {
		m := move{kind: req.Kind, ref: req.Key, from: l.row(req.From, req.Key), to: l.row(req.To, req.Key), amount: int64(req.Amount),
			capped: req.Kind == KindDeposit || req.Kind == KindTransfer, peer: req.Peer}
		if req.Reserved {
			m.incoming = int64(req.Amount)
		}
		p, err := l.move(ctx, tx, m)
		if err != nil {
			return TransferResult{}, err
		}
		if err := events.Write(ctx, tx, req.Events...); err != nil {
			return TransferResult{}, err
		}
		return TransferResult{PostingID: p.id, Amount: req.Amount, FromBalance: money.Amount(p.debitBalance), ToBalance: money.Amount(p.creditBalance)}, nil
	})
	res.Replayed = replayed
	return res, err
}

// Deposit credits a user from the external funding account (admin and test
// use; real top-ups come through the payment channel).
func (l *Ledger) Deposit(ctx context.Context, key string, user int64, amount money.Amount) (TransferResult, error) {
	if user <= 0 {
		return TransferResult{}, fmt.Errorf("deposit: %w: user id %d", ErrInvalid, user)
	}
	return l.Transfer(ctx, TransferRequest{Key: key, From: External, To: User(user), Amount: amount, Kind: KindDeposit})
}

func validMove(from, to Account, amount money.Amount) error {
	if err := validAccount(from); err != nil {
		return err
	}
	if err := validAccount(to); err != nil {
		return err
	}
	if from == to {
		return fmt.Errorf("%w: from and to are the same account", ErrInvalid)
	}
	if amount <= 0 {
		return fmt.Errorf("%w: amount %s must be positive", ErrInvalid, amount)
	}
	return nil
}

type posting struct {
	id            int64
	debitBalance  int64
	creditBalance int64
}

// move is one posting: amount from row from to row to.
type move struct {
	kind, ref string
	from, to  int64
	amount    int64
	// release is the held amount freed from the debited account (a hold
	// post); holdID, when not 0, is the hold the posting settles.
	release, holdID int64
	// capped refuses the move when a receiving user would pass the maximum
	// balance (money given by choice: deposits, transfers).
	capped bool
	// incoming is room reserved on the receiving user at try that this move
	// uses up (a cross-shard transfer's confirm).
	incoming int64
	// peer is the user on the other side of a clearing account.
	peer int64
}

// move debits row from and credits row to, locking them in ascending id
// order (system stripes, which are negative, before users) so that no two
// transactions wait on each other in a cycle, and writes the posting with
// both balances after it. The statements go to the server in one round
// trip.
func (l *Ledger) move(ctx context.Context, tx pgx.Tx, m move) (posting, error) {
	if m.amount > int64(money.Max) {
		return posting{}, fmt.Errorf("%w: %s is above the largest amount %s", ErrInvalid, money.Amount(m.amount), money.Max)
	}
	if m.capped && m.to > 0 && m.amount > l.maxBalance {
		return posting{}, fmt.Errorf("%w: %s is above the maximum balance %s", ErrBalanceLimit, money.Amount(m.amount), money.Amount(l.maxBalance))
	}
	b := &pgx.Batch{}
	debitFirst := m.from < m.to
	queueDebit := func() {
		// For a user the available balance after it, (balance - amount) -
		// (held - release), must stay >= 0; a missing wallet has nothing.
		b.Queue(`UPDATE accounts SET balance = balance - $2, held = held - $3
			WHERE id = $1 AND (kind = 'system' OR balance - $2 - held + $3 >= 0)`, m.from, m.amount, m.release)
	}
	queueCredit := func() {
		if m.to > 0 { // a user's wallet opens with the first money it receives
			b.Queue(`INSERT INTO accounts (id, kind, name, balance, slot) VALUES ($1, 'user', 'user', $2, $6)
				ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + excluded.balance, incoming = accounts.incoming - $3
				WHERE NOT $4 OR accounts.balance + accounts.incoming + excluded.balance <= $5`, m.to, m.amount, m.incoming, m.capped, l.maxBalance, shard.SlotOf(m.to))
		} else {
			b.Queue(`UPDATE accounts SET balance = balance + $2 WHERE id = $1`, m.to, m.amount)
		}
	}
	if debitFirst {
		queueDebit()
		queueCredit()
	} else {
		queueCredit()
		queueDebit()
	}
	var peer *int64
	if m.peer > 0 {
		peer = &m.peer
	}
	b.Queue(`INSERT INTO postings (kind, ref, debit_account, credit_account, amount, debit_balance, credit_balance, peer)
		VALUES ($1, $2, $3, $4, $5, (SELECT balance FROM accounts WHERE id = $3), (SELECT balance FROM accounts WHERE id = $4), $6)
		RETURNING id, debit_balance, credit_balance`, m.kind, m.ref, m.from, m.to, m.amount, peer)
	if m.holdID != 0 {
		b.Queue(`UPDATE holds SET posting_id = currval('postings_id_seq') WHERE id = $1`, m.holdID)
	}
	res := tx.SendBatch(ctx, b)
	defer res.Close()
	var p posting
	for i := range 2 {
		tag, err := res.Exec()
		isDebit := (i == 0) == debitFirst
		switch {
		case isDebit && (err == nil && tag.RowsAffected() == 0):
			return p, ErrInsufficientFunds
		case err != nil && isDebit:
			return p, fmt.Errorf("debit account %d: %w", m.from, err)
		case err != nil:
			return p, fmt.Errorf("credit account %d: %w", m.to, err)
		case tag.RowsAffected() != 1 && m.capped && m.to > 0:
			return p, fmt.Errorf("%w: user %d, maximum %s", ErrBalanceLimit, m.to, money.Amount(l.maxBalance))
		case tag.RowsAffected() != 1:
			return p, fmt.Errorf("credit account %d: no such account", m.to)
		}
	}
	if err := res.QueryRow().Scan(&p.id, &p.debitBalance, &p.creditBalance); err != nil {
		return p, fmt.Errorf("write posting: %w", err)
	}
	if m.holdID != 0 {
		if _, err := res.Exec(); err != nil {
			return p, fmt.Errorf("link hold %d: %w", m.holdID, err)
		}
	}
	return p, res.Close()
}

// HoldRequest reserves Amount of a user's available balance (TCC try).
type HoldRequest struct {
	Key    string       `json:"-"`
	User   int64        `json:"user"`
	Amount money.Amount `json:"amount"`
	// ExpiresAt, when set, lets ExpireHolds void the hold after it. Holds
	// that are TCC branches usually leave it zero: the coordinator resolves them.
	ExpiresAt time.Time `json:"expires_at"`
}

// HoldResult describes a hold.
type HoldResult struct {
	HoldID    int64        `json:"hold_id"`
	Amount    money.Amount `json:"amount"`
	Available money.Amount `json:"available"`
	Replayed  bool         `json:"-"`
}

// Hold reserves money on a user's wallet: available drops, balance stays.
func (l *Ledger) Hold(ctx context.Context, req HoldRequest) (HoldResult, error) {
	var res HoldResult
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = l.HoldIn(ctx, tx, req)
		return err
	})
	if err != nil {
		return HoldResult{}, fmt.Errorf("hold %s for user %d (key %q): %w", req.Amount, req.User, req.Key, err)
	}
	return res, nil
}

// HoldIn is Hold inside the caller's transaction on this shard's database.
func (l *Ledger) HoldIn(ctx context.Context, tx pgx.Tx, req HoldRequest) (HoldResult, error) {
	if req.User <= 0 {
		return HoldResult{}, fmt.Errorf("hold: %w: user id %d", ErrInvalid, req.User)
	}
	if req.Amount <= 0 {
		return HoldResult{}, fmt.Errorf("hold: %w: amount %s must be positive", ErrInvalid, req.Amount)
	}
	user := req.User
	res, replayed, err := idempotent(ctx, tx, req.Key, "hold", req, &user, func() (HoldResult, error) {
		var expires *time.Time
		if !req.ExpiresAt.IsZero() {
			expires = &req.ExpiresAt
		}
		// Both statements in one round trip; if the first finds too
		// little money, the transaction is rolled back with the second.
		b := &pgx.Batch{}
		b.Queue(`UPDATE accounts SET held = held + $2 WHERE id = $1 AND kind = 'user' AND balance - held >= $2
				RETURNING balance - held`, req.User, int64(req.Amount))
		b.Queue(`INSERT INTO holds (key, account_id, amount, expires_at) VALUES ($1, $2, $3, $4) RETURNING id`,
			req.Key, req.User, int64(req.Amount), expires)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		var available, id int64
		err := br.QueryRow().Scan(&available)
		if errors.Is(err, pgx.ErrNoRows) {
			return HoldResult{}, ErrInsufficientFunds
		}
		if err != nil {
			return HoldResult{}, err
		}
		if err := br.QueryRow().Scan(&id); err != nil {
			return HoldResult{}, fmt.Errorf("write hold: %w", err)
		}
		if err := br.Close(); err != nil {
			return HoldResult{}, err
		}
		return HoldResult{HoldID: id, Amount: req.Amount, Available: money.Amount(available)}, nil
	})
	res.Replayed = replayed
	return res, err
}

// PostRequest settles a hold (TCC confirm): Amount (at most the held amount)
// moves to To, the rest is released.
type PostRequest struct {
	Key     string       `json:"-"`
	HoldKey string       `json:"hold_key"`
	To      Account      `json:"to"`
	Amount  money.Amount `json:"amount"`
	Peer    int64        `json:"-"` // the user on the other side, for statements
	// Kind of posting (KindHoldPost when empty).
	Kind string `json:"kind,omitempty"`
}

// PostResult describes a posted hold.
type PostResult struct {
	HoldID    int64        `json:"hold_id"`
	PostingID int64        `json:"posting_id"`
	Posted    money.Amount `json:"posted"`
	Released  money.Amount `json:"released"`
	Replayed  bool         `json:"-"`
}

// Post settles a hold once. A hold already voided, expired or posted under
// another key is ErrHoldResolved.
func (l *Ledger) Post(ctx context.Context, req PostRequest) (PostResult, error) {
	if err := validAccount(req.To); err != nil {
		return PostResult{}, fmt.Errorf("post hold %q: %w", req.HoldKey, err)
	}
	if req.Amount <= 0 {
		return PostResult{}, fmt.Errorf("post hold %q: %w: amount %s must be positive (void to release all)", req.HoldKey, ErrInvalid, req.Amount)
	}
	var res PostResult
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = l.postIn(ctx, tx, req)
		return err
	})
	if err != nil {
		return PostResult{}, fmt.Errorf("post hold %q (key %q): %w", req.HoldKey, req.Key, err)
	}
	return res, nil
}

// PostIn is Post inside the caller's transaction on this shard's database.
func (l *Ledger) PostIn(ctx context.Context, tx pgx.Tx, req PostRequest) (PostResult, error) {
	if err := validAccount(req.To); err != nil {
		return PostResult{}, fmt.Errorf("post hold %q: %w", req.HoldKey, err)
	}
	if req.Amount <= 0 {
		return PostResult{}, fmt.Errorf("post hold %q: %w: amount %s must be positive (void to release all)", req.HoldKey, ErrInvalid, req.Amount)
	}
	res, err := l.postIn(ctx, tx, req)
	if err != nil {
		return PostResult{}, fmt.Errorf("post hold %q (key %q): %w", req.HoldKey, req.Key, err)
	}
	return res, nil
}

func (l *Ledger) postIn(ctx context.Context, tx pgx.Tx, req PostRequest) (PostResult, error) {
	var user int64
	res, replayed, err := idempotent(ctx, tx, req.Key, "post", req, &user, func() (PostResult, error) {
		h, err := l.resolve(ctx, tx, req.HoldKey, req.Key, "posted", int64(req.Amount))
		if errors.Is(err, errResolvedSo) {
			return PostResult{HoldID: h.id, Posted: req.Amount}, nil // done before, maybe on the shard the wallet came from
		}
		if err != nil {
			return PostResult{}, err
		}
		user = h.account
		kind := req.Kind
		if kind == "" {
			kind = KindHoldPost
		}
		p, err := l.move(ctx, tx, move{kind: kind, ref: req.Key, from: h.account, to: l.row(req.To, req.Key),
			amount: int64(req.Amount), release: h.amount, holdID: h.id, peer: req.Peer})
		if err != nil {
			return PostResult{}, err
		}
		return PostResult{HoldID: h.id, PostingID: p.id, Posted: req.Amount, Released: money.Amount(h.amount) - req.Amount}, nil
	})
	res.Replayed = replayed
	return res, err
}

// VoidRequest releases a hold (TCC cancel).
type VoidRequest struct {
	Key     string `json:"-"`
	HoldKey string `json:"hold_key"`
}

// VoidResult describes a voided hold.
type VoidResult struct {
	HoldID   int64        `json:"hold_id"`
	Released money.Amount `json:"released"`
	Replayed bool         `json:"-"`
}

// Void releases a hold once.
func (l *Ledger) Void(ctx context.Context, req VoidRequest) (VoidResult, error) {
	var res VoidResult
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		res, err = l.VoidIn(ctx, tx, req)
		return err
	})
	if err != nil {
		return VoidResult{}, fmt.Errorf("void hold %q (key %q): %w", req.HoldKey, req.Key, err)
	}
	return res, nil
}

// VoidIn is Void inside the caller's transaction on this shard's database.
func (l *Ledger) VoidIn(ctx context.Context, tx pgx.Tx, req VoidRequest) (VoidResult, error) {
	var user int64
	res, replayed, err := idempotent(ctx, tx, req.Key, "void", req, &user, func() (VoidResult, error) {
		h, err := l.resolve(ctx, tx, req.HoldKey, req.Key, "voided", 0)
		if errors.Is(err, errResolvedSo) {
			return VoidResult{HoldID: h.id, Released: money.Amount(h.amount)}, nil // done before, maybe on the shard the wallet came from
		}
		if err != nil {
			return VoidResult{}, err
		}
		user = h.account
		if err := release(ctx, tx, h.account, h.amount); err != nil {
			return VoidResult{}, err
		}
		return VoidResult{HoldID: h.id, Released: money.Amount(h.amount)}, nil
	})
	res.Replayed = replayed
	return res, err
}

type hold struct {
	id, account, amount int64
}

// errResolvedSo: the hold was resolved already, the same way, by the same key.
var errResolvedSo = errors.New("hold already resolved so by this key")

// resolve moves an open, unexpired hold to state, once.
func (l *Ledger) resolve(ctx context.Context, tx pgx.Tx, holdKey, resolveKey, state string, posted int64) (hold, error) {
	var h hold
	var postedArg *int64
	if state == "posted" {
		postedArg = &posted
	}
	err := tx.QueryRow(ctx, `UPDATE holds SET state = $2, posted_amount = $3, resolve_key = $4, resolved_at = now()
		WHERE key = $1 AND state = 'open' AND (expires_at IS NULL OR expires_at > $5) AND amount >= coalesce($3, 0)
		RETURNING id, account_id, amount`, holdKey, state, postedArg, resolveKey, l.now()).Scan(&h.id, &h.account, &h.amount)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return h, err
	}
	var cur string
	var amount int64
	var expires *time.Time
	var resolvedBy *string
	err = tx.QueryRow(ctx, `SELECT id, account_id, state, amount, expires_at, resolve_key FROM holds WHERE key = $1`, holdKey).
		Scan(&h.id, &h.account, &cur, &amount, &expires, &resolvedBy)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return h, ErrHoldNotFound
	case err != nil:
		return h, err
	case cur == state && resolvedBy != nil && *resolvedBy == resolveKey:
		// This very resolution happened already: a branch repeated after
		// its wallet moved here with the hold (the barrier that would
		// have answered stayed on the shard it came from).
		h.amount = amount
		return h, errResolvedSo
	case cur != "open":
		return h, fmt.Errorf("%w: %s", ErrHoldResolved, cur)
	case posted > amount:
		return h, fmt.Errorf("%w: %s > %s", ErrPostExceedsHold, money.Amount(posted), money.Amount(amount))
	default:
		return h, fmt.Errorf("%w: expired at %s", ErrHoldResolved, expires.Format(time.RFC3339))
	}
}

func release(ctx context.Context, tx pgx.Tx, account, amount int64) error {
	_, err := tx.Exec(ctx, `UPDATE accounts SET held = held - $2 WHERE id = $1`, account, amount)
	return err
}

// ExpireHolds voids up to limit open holds whose expiry has passed and
// returns how many it expired.
func (l *Ledger) ExpireHolds(ctx context.Context, limit int) (int, error) {
	var n int
	err := l.inTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE holds SET state = 'expired', resolved_at = now()
			WHERE id IN (SELECT id FROM holds WHERE state = 'open' AND expires_at <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
			RETURNING account_id, amount`, l.now(), limit)
		if err != nil {
			return err
		}
		freed := map[int64]int64{}
		n = 0
		for rows.Next() {
			var acct, amt int64
			if err := rows.Scan(&acct, &amt); err != nil {
				return err
			}
			freed[acct] += amt
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, acct := range sortedKeys(freed) {
			if err := release(ctx, tx, acct, freed[acct]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("expire holds: %w", err)
	}
	return n, nil
}
