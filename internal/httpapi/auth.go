package httpapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Claims are what a bearer token says: who acts, and until when.
type Claims struct {
	User    int64 `json:"sub,omitempty"`
	Admin   bool  `json:"adm,omitempty"`
	Expires int64 `json:"exp"`
}

// Errors of token checking.
var (
	ErrNoToken  = errors.New("missing bearer token")
	ErrBadToken = errors.New("invalid token")
	ErrExpired  = errors.New("token expired")
)

// maxUserID is the largest user id (flow.MaxUserID): 2^53-1.
const maxUserID = 1<<53 - 1

// MinSecret is the shortest signing secret accepted.
const MinSecret = 32

var b64 = base64.RawURLEncoding.Strict() // one string a token: unused bits must be zero

// IssueToken signs claims with HMAC-SHA256: base64url(claims).base64url(mac).
func IssueToken(secret []byte, c Claims) (string, error) {
	if len(secret) < MinSecret {
		return "", fmt.Errorf("token secret must be at least %d bytes", MinSecret)
	}
	if (c.User <= 0 || c.User > maxUserID) && !c.Admin {
		return "", errors.New("a token is for a user (id 1..2^53-1) or an admin")
	}
	body, _ := json.Marshal(c)
	payload := b64.EncodeToString(body)
	return payload + "." + b64.EncodeToString(sign(secret, payload)), nil
}

func sign(secret []byte, payload string) []byte {
	return signInto(nil, secret, payload)
}

// macs keeps keyed HMACs for reuse, one pool a secret: keying one (two
// SHA-256 blocks and allocations) cost as much as the MAC of a token.
var macs sync.Map // string(secret) -> *sync.Pool of hash.Hash

// signInto appends the MAC of payload under secret to b.
func signInto(b, secret []byte, payload string) []byte {
	pool, ok := macs.Load(string(secret))
	if !ok {
		key := bytes.Clone(secret)
		pool, _ = macs.LoadOrStore(string(key), &sync.Pool{New: func() any { return hmac.New(sha256.New, key) }})
	}
	p := pool.(*sync.Pool)
	m := p.Get().(hash.Hash)
	m.Reset()
	_, _ = io.WriteString(m, payload)
	b = m.Sum(b)
	p.Put(m)
	return b
}

// VerifyToken checks the signature and the expiry.
func VerifyToken(secret []byte, token string, now time.Time) (Claims, error) {
	payload, mac, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrBadToken
	}
	var gotBuf, wantBuf [sha256.Size]byte
	var bodyBuf [128]byte
	if b64.DecodedLen(len(mac)) != sha256.Size {
		return Claims{}, ErrBadToken
	}
	n, err := b64.Decode(gotBuf[:], []byte(mac))
	if err != nil || !hmac.Equal(gotBuf[:n], signInto(wantBuf[:0], secret, payload)) {
		return Claims{}, ErrBadToken
	}
	var body []byte
	if n := b64.DecodedLen(len(payload)); n > len(bodyBuf) {
		body = make([]byte, n)
	} else {
		body = bodyBuf[:n]
	}
	if n, err = b64.Decode(body, []byte(payload)); err != nil {
		return Claims{}, ErrBadToken
	}
	body = body[:n]
	var c Claims
	if !c.parseUser(body) {
		if err := json.Unmarshal(body, &c); err != nil {
			return Claims{}, ErrBadToken
		}
	}
	if (c.User <= 0 && !c.Admin) || c.User > maxUserID || c.User < 0 {
		return Claims{}, ErrBadToken
	}
	if now.Unix() >= c.Expires {
		return Claims{}, ErrExpired
	}
	return c, nil
}

// parseUser reads a user token's body in the one form IssueToken writes
// for it, {"sub":N,"exp":N}, without reflection; any other form is left to
// encoding/json (false). What it accepts, it reads as json.Unmarshal would
// (TestParseUserLikeJSON).
func (c *Claims) parseUser(body []byte) bool {
	rest, ok := bytes.CutPrefix(body, []byte(`{"sub":`))
	if !ok {
		return false
	}
	sub, rest, ok := leadingInt(rest)
	if !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"exp":`)); !ok {
		return false
	}
	exp, rest, ok := leadingInt(rest)
	if !ok || string(rest) != "}" {
		return false
	}
	*c = Claims{User: sub, Expires: exp}
	return true
}

// leadingInt reads a JSON integer that starts b: an optional minus, then
// 0 alone or digits not starting with 0, within int64.
func leadingInt(b []byte) (int64, []byte, bool) {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == start || (b[start] == '0' && i-start > 1) {
		return 0, nil, false
	}
	v, err := strconv.ParseInt(string(b[:i]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	return v, b[i:], true
}
