package httpapi

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"hongbao/internal/bus"
	"hongbao/internal/channel"
	"hongbao/internal/days"
	"hongbao/internal/dtx"
	"hongbao/internal/events"
	"hongbao/internal/flow"
	"hongbao/internal/group"
	"hongbao/internal/ledger"
	"hongbao/internal/money"
	"hongbao/internal/packet"
	"hongbao/internal/payment"
	"hongbao/internal/recon"
	"hongbao/internal/slots"
)

// apiError is the JSON body of every error: a stable code and a message.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Message }

func bad(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: msg}
}

// errorTable maps every condition a caller branches on to a status and a
// stable code. The first match wins.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{ErrNoToken, http.StatusUnauthorized, "unauthorized"},
	{ErrBadToken, http.StatusUnauthorized, "unauthorized"},
	{ErrExpired, http.StatusUnauthorized, "token_expired"},
	{money.ErrSyntax, http.StatusBadRequest, "bad_amount"},
	{money.ErrPrecision, http.StatusBadRequest, "bad_amount"},
	{money.ErrRange, http.StatusBadRequest, "bad_amount"},
	{money.ErrNotPositive, http.StatusBadRequest, "bad_amount"},
	{ledger.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{packet.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{group.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{flow.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{dtx.ErrInvalidSpec, http.StatusBadRequest, "invalid_request"},
	{ledger.ErrInsufficientFunds, http.StatusConflict, "insufficient_funds"},
	{ledger.ErrBalanceLimit, http.StatusConflict, "balance_limit"},
	{ledger.ErrIdempotencyConflict, http.StatusConflict, "idempotency_conflict"},
	{dtx.ErrGIDConflict, http.StatusConflict, "idempotency_conflict"},
	{days.ErrArchived, http.StatusGone, "archived"},
	{slots.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{slots.ErrNotFound, http.StatusNotFound, "not_found"},
	{slots.ErrTooLate, http.StatusConflict, "conflict"},
	{packet.ErrNotFound, http.StatusNotFound, "not_found"},
	{group.ErrNotFound, http.StatusNotFound, "not_found"},
	{dtx.ErrNotFound, http.StatusNotFound, "not_found"},
	{dtx.ErrFinished, http.StatusConflict, "already_finished"},
	{bus.ErrNoDeadLetter, http.StatusNotFound, "not_found"},
	{packet.ErrWrongSet, http.StatusNotFound, "not_found"},
	{packet.ErrSoldOut, http.StatusConflict, "sold_out"},
	{packet.ErrExpired, http.StatusConflict, "packet_expired"},
	{packet.ErrNotActive, http.StatusConflict, "packet_not_active"},
	{packet.ErrBusy, http.StatusTooManyRequests, "busy"},
	{packet.ErrFenced, http.StatusServiceUnavailable, "retry"},
	{packet.ErrNotOwner, http.StatusServiceUnavailable, "retry"},
	// Someone who may not grab a packet is told it does not exist, as a
	// read would: its group or receiver is not theirs to learn.
	{packet.ErrNotAllowed, http.StatusNotFound, "not_found"},
	{packet.ErrNotGroupMember, http.StatusForbidden, "not_a_member"},
	{group.ErrGroupFull, http.StatusConflict, "group_full"},
	{group.ErrBanned, http.StatusForbidden, "banned"},
	{group.ErrAlreadyMember, http.StatusConflict, "already_member"},
	{group.ErrConflict, http.StatusConflict, "conflict"},
	{payment.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{payment.ErrNotFound, http.StatusNotFound, "not_found"},
	{payment.ErrDailyLimit, http.StatusConflict, "daily_limit"},
	{payment.ErrAmountMismatch, http.StatusConflict, "amount_mismatch"},
	{payment.ErrNoChannel, http.StatusServiceUnavailable, "no_channel"},
	{channel.ErrBadSignature, http.StatusUnauthorized, "bad_signature"},
	{channel.ErrUnknown, http.StatusServiceUnavailable, "channel_unavailable"},
	{recon.ErrNoReport, http.StatusNotFound, "not_found"},
	{events.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{events.ErrNotFound, http.StatusNotFound, "not_found"},
	{recon.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{recon.ErrNoDifference, http.StatusNotFound, "not_found"},
}

// clientMessage is what a client is told of err, matched by sentinel: the
// whole text for bad input (it says what to fix in the client's own
// terms), the sentinel's words otherwise; the wrapping around them names
// internal keys, accounts and branches.
func clientMessage(err, sentinel error) string {
	switch {
	case errors.Is(sentinel, money.ErrSyntax), errors.Is(sentinel, money.ErrPrecision), errors.Is(sentinel, money.ErrRange),
		errors.Is(sentinel, money.ErrNotPositive), errors.Is(sentinel, ledger.ErrInvalid), errors.Is(sentinel, packet.ErrInvalid),
		errors.Is(sentinel, group.ErrInvalid), errors.Is(sentinel, flow.ErrInvalid), errors.Is(sentinel, dtx.ErrInvalidSpec),
		errors.Is(sentinel, payment.ErrDailyLimit), errors.Is(sentinel, recon.ErrInvalid), errors.Is(sentinel, events.ErrInvalid),
		errors.Is(sentinel, days.ErrArchived), errors.Is(sentinel, slots.ErrInvalid), errors.Is(sentinel, slots.ErrTooLate):
		msg := err.Error()
		if i := strings.LastIndex(msg, sentinel.Error()); i >= 0 {
			msg = msg[i:] // from the sentinel on: what is wrong, without the internal wrapping before it
		}
		return msg
	}
	if sentinel == packet.ErrNotAllowed {
		return packet.ErrNotFound.Error()
	}
	return sentinel.Error()
}

// toAPIError classifies err. A database that cannot be reached is 503;
// anything unknown is 500 and logged by the caller.
func toAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return &apiError{Status: e.status, Code: e.code, Message: clientMessage(err, e.err)}
		}
	}
	if errors.Is(err, context.Canceled) {
		// The client went away; whatever was committed stays committed and
		// a retry with the same key finds it.
		return &apiError{Status: 499, Code: "canceled", Message: "request canceled by the client"}
	}
	if ledger.IsSlotMoving(err) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "retry", Message: ledger.ErrSlotMoving.Error()}
	}
	if Unavailable(err) {
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "a dependency is unavailable; retry with the same Idempotency-Key"}
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// Unavailable reports an error that says a dependency could not be used
// (a database restarting or unreachable, a connection lost, a deadline):
// the request may be retried with the same key, and its outcome, if any,
// is found then.
func Unavailable(err error) bool {
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// 08: connection exception; 53: insufficient resources (too many
		// connections); 57P01-57P03: the server shutting down or starting;
		// 40001/40P01: serialization failure, deadlock (safe to retry).
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "53") || strings.HasPrefix(pe.Code, "57P") ||
			pe.Code == "40001" || pe.Code == "40P01"
	}
	return pgconn.SafeToRetry(err) || strings.Contains(err.Error(), "conn closed") || strings.Contains(err.Error(), "connection reset")
}
