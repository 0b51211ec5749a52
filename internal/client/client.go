// Package client calls Hongbao's HTTP API: Client for one token (the
// command line), Users to act as many users with the server's secret (the
// demo and the benchmarks).
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"hongbao/internal/httpapi"
)

// Client calls a server with one bearer token.
type Client struct {
	URL, Token string
	HTTP       *http.Client
}

// New returns a client of the server at url.
func New(url, token string) *Client {
	return &Client{URL: url, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Call sends a request and returns the JSON body and the status; an API
// error becomes an error with its code and message.
func (c *Client) Call(ctx context.Context, method, path string, body any, key string) (json.RawMessage, int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return nil, 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, resp.StatusCode, err
	}
	if resp.StatusCode >= 400 {
		var e struct{ Code, Message string }
		_ = json.Unmarshal(b, &e)
		return b, resp.StatusCode, fmt.Errorf("%s %s: HTTP %d %s: %s", method, path, resp.StatusCode, e.Code, e.Message)
	}
	return b, resp.StatusCode, nil
}

// NewKey returns a fresh random idempotency key.
func NewKey() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Users acts as any user (or the admin) of a server whose token secret it
// holds.
type Users struct {
	urls   []string // one or more nodes of one system, taken in turn
	next   atomic.Uint64
	secret []byte
	admin  string
	httpc  *http.Client
}

// NewUsers returns a client for url (several nodes: comma-separated, each
// request goes to the next) keeping up to conns connections.
func NewUsers(url string, secret []byte, conns int) *Users {
	c := &Users{urls: strings.Split(url, ","), secret: secret, httpc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: max(2*conns, 2)}}}
	c.admin, _ = httpapi.IssueToken(secret, httpapi.Claims{Admin: true, Expires: time.Now().Add(24 * time.Hour).Unix()})
	return c
}

// Call makes one request as user (0: the admin) and decodes the answer
// into out; it returns the status.
func (a *Users) Call(ctx context.Context, method, path string, user int64, key string, body, out any) (int, error) {
	c := &Client{URL: a.urls[a.next.Add(1)%uint64(len(a.urls))], Token: a.admin, HTTP: a.httpc}
	if user > 0 {
		tok, err := httpapi.IssueToken(a.secret, httpapi.Claims{User: user, Expires: time.Now().Add(time.Hour).Unix()})
		if err != nil {
			return 0, err
		}
		c.Token = tok
	}
	raw, status, err := c.Call(ctx, method, path, body, key)
	if err != nil {
		return status, err
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return status, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return status, nil
}
