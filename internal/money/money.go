// Package money holds amounts as int64 minor units (fen) and converts them
// to and from the decimal text people read ("12.34"). There are no floats.
package money

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Amount is a number of fen (1/100 yuan). It may be negative only on system
// accounts; user-facing requests use Positive.
type Amount int64

// Max is the largest amount Hongbao represents, in either direction:
// 10,000,000,000,000.00 (1e15 fen). No single amount and no wallet balance
// may exceed it (the ledger's schema says so too), so that adding any two
// of them can never overflow int64.
const Max Amount = 1_000_000_000_000_000

// Errors returned by Parse. They are wrapped with the offending input.
var (
	ErrSyntax      = errors.New("not a decimal amount")
	ErrPrecision   = errors.New("more than two decimal places")
	ErrRange       = errors.New("amount out of range")
	ErrNotPositive = errors.New("amount must be greater than zero")
)

// Parse reads "12", "12.3", "12.34" or "-0.01". It rejects exponents,
// spaces, "+", a bare ".", more than two fraction digits and values beyond
// Max in either direction (ErrRange).
func Parse(s string) (Amount, error) {
	if s == "" {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrSyntax)
	}
	neg := false
	body := s
	if body[0] == '-' {
		neg = true
		body = body[1:]
	}
	intPart, frac := body, ""
	for i := 0; i < len(body); i++ {
		if body[i] == '.' {
			intPart, frac = body[:i], body[i+1:]
			break
		}
	}
	if intPart == "" || (len(body) > len(intPart) && frac == "") {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrSyntax)
	}
	if !digits(intPart) || !digits(frac) {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrSyntax)
	}
	if len(frac) > 2 {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrPrecision)
	}
	for len(frac) < 2 {
		frac += "0"
	}
	// Magnitude in uint64 so that math.MinInt64 round-trips.
	whole, err := strconv.ParseUint(intPart, 10, 64)
	if err != nil || whole > math.MaxUint64/100 {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrRange)
	}
	f, _ := strconv.ParseUint(frac, 10, 64)
	mag := whole*100 + f
	if mag < whole*100 {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrRange)
	}
	if mag > uint64(Max) {
		return 0, fmt.Errorf("parse amount %q: %w (at most %s)", s, ErrRange, Max)
	}
	if neg {
		return Amount(-int64(mag)), nil
	}
	return Amount(mag), nil
}

// ParsePositive is Parse for amounts a user moves: at least 0.01.
func ParsePositive(s string) (Amount, error) {
	a, err := Parse(s)
	if err != nil {
		return 0, err
	}
	if a <= 0 {
		return 0, fmt.Errorf("parse amount %q: %w", s, ErrNotPositive)
	}
	return a, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String formats the amount with exactly two decimals: 1234 -> "12.34".
func (a Amount) String() string { return string(a.AppendText(make([]byte, 0, 24))) }

// AppendText appends the decimal form (String) to b.
func (a Amount) AppendText(b []byte) []byte {
	v := int64(a)
	var mag uint64
	if v < 0 {
		b = append(b, '-')
		mag = uint64(-(v + 1)) + 1
	} else {
		mag = uint64(v)
	}
	b = strconv.AppendUint(b, mag/100, 10)
	return append(b, '.', byte('0'+mag%100/10), byte('0'+mag%10))
}

// MarshalText writes the decimal form, so JSON carries "12.34", never a float.
func (a Amount) MarshalText() ([]byte, error) { return a.AppendText(nil), nil }

// UnmarshalText accepts the decimal form.
func (a *Amount) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*a = v
	return nil
}
