package channel

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Headers of a signed message (a request to the channel or its callback).
const (
	HeaderTimestamp = "X-Channel-Timestamp"
	HeaderSignature = "X-Channel-Signature"
)

// MaxSkew is how old (or early) a signed message may be.
const MaxSkew = 5 * time.Minute

// ErrBadSignature: a message unsigned, forged or stale.
var ErrBadSignature = errors.New("channel: bad or stale signature")

// Sign sets the timestamp and the HMAC-SHA256 signature of body (over
// timestamp, a newline and the body) on h.
func Sign(h http.Header, secret, body []byte, now time.Time) {
	SignAs(h, HeaderTimestamp, HeaderSignature, secret, body, now)
}

// SignAs is Sign with other header names (webhooks sign the same way).
func SignAs(h http.Header, tsHeader, sigHeader string, secret, body []byte, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(tsHeader, ts)
	h.Set(sigHeader, mac(secret, ts, body))
}

// Verify checks the signature and that the timestamp is within MaxSkew.
func Verify(h http.Header, secret, body []byte, now time.Time) error {
	return VerifyAs(h, HeaderTimestamp, HeaderSignature, secret, body, now)
}

// VerifyAs is Verify with other header names.
func VerifyAs(h http.Header, tsHeader, sigHeader string, secret, body []byte, now time.Time) error {
	ts := h.Get(tsHeader)
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return ErrBadSignature
	}
	want := mac(secret, ts, body)
	if !hmac.Equal([]byte(h.Get(sigHeader)), []byte(want)) {
		return ErrBadSignature
	}
	return nil
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'\n'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}
