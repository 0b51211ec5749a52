package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

var b64 = base64.RawURLEncoding

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
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// VerifyToken checks the signature and the expiry.
func VerifyToken(secret []byte, token string, now time.Time) (Claims, error) {
	payload, mac, ok := strings.Cut(token, ".")
	if !ok {
		return Claims{}, ErrBadToken
	}
	got, err := b64.DecodeString(mac)
	if err != nil || !hmac.Equal(got, sign(secret, payload)) {
		return Claims{}, ErrBadToken
	}
	body, err := b64.DecodeString(payload)
	if err != nil {
		return Claims{}, ErrBadToken
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil || (c.User <= 0 && !c.Admin) || c.User > maxUserID || c.User < 0 {
		return Claims{}, ErrBadToken
	}
	if now.Unix() >= c.Expires {
		return Claims{}, ErrExpired
	}
	return c, nil
}
