package channel

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"hongbao/internal/money"
)

// Client speaks to a channel over HTTP, signing every request with the
// merchant secret. It maps every answer to the three states: a decoded
// result (definite), ErrRejected or ErrNoOrder (definite failures), or
// ErrUnknown (timeouts, lost answers, 5xx, "system error").
type Client struct {
	URL       string
	Secret    []byte
	NotifyURL string // where the channel calls back when an order is paid
	HTTP      *http.Client
	Now       func() time.Time
}

// NewClient returns a client of the channel at url.
func NewClient(url string, secret []byte, notifyURL string) *Client {
	return &Client{URL: strings.TrimRight(url, "/"), Secret: secret, NotifyURL: notifyURL, HTTP: &http.Client{Timeout: 5 * time.Second}, Now: time.Now}
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	Sign(req.Header, c.Secret, b, c.Now())
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrUnknown, method, path, err) // sent or not, we cannot tell
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%w: %s %s: reading the answer: %v", ErrUnknown, method, path, err)
	}
	var code struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(raw, &code)
	switch {
	case resp.StatusCode == 404:
		return fmt.Errorf("%w: %s", ErrNoOrder, path)
	case resp.StatusCode == 400 || resp.StatusCode == 401 || resp.StatusCode == 409:
		return fmt.Errorf("%w: %s %s: %d %s", ErrRejected, method, path, resp.StatusCode, code.Code)
	case resp.StatusCode != 200 || code.Code == "SYSTEMERROR":
		return fmt.Errorf("%w: %s %s: %d %s", ErrUnknown, method, path, resp.StatusCode, code.Code)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%w: %s %s: undecodable answer", ErrUnknown, method, path)
	}
	return nil
}

// CreatePay asks for a pay order (idempotent on id).
func (c *Client) CreatePay(ctx context.Context, id string, amount money.Amount) (PayOrder, error) {
	var o PayOrder
	err := c.do(ctx, "POST", "/pay", map[string]any{"id": id, "amount": amount, "notify_url": c.NotifyURL}, &o)
	return o, err
}

// QueryPay asks for a pay order's state.
func (c *Client) QueryPay(ctx context.Context, id string) (PayOrder, error) {
	var o PayOrder
	err := c.do(ctx, "GET", "/pay/"+id, nil, &o)
	return o, err
}

// ClosePay closes an unpaid order; an order paid meanwhile answers paid.
func (c *Client) ClosePay(ctx context.Context, id string) (PayOrder, error) {
	var o PayOrder
	err := c.do(ctx, "POST", "/pay/"+id+"/close", nil, &o)
	return o, err
}

// Payout pays a user out (idempotent on id: a repeat never pays twice).
func (c *Client) Payout(ctx context.Context, id string, user int64, amount money.Amount) (Payout, error) {
	var p Payout
	err := c.do(ctx, "POST", "/payout", map[string]any{"id": id, "user": user, "amount": amount}, &p)
	return p, err
}

// QueryPayout asks for a payout's state.
func (c *Client) QueryPayout(ctx context.Context, id string) (Payout, error) {
	var p Payout
	err := c.do(ctx, "GET", "/payout/"+id, nil, &p)
	return p, err
}

// Statement downloads the day's statement.
func (c *Client) Statement(ctx context.Context, day time.Time) ([]Line, error) {
	var out struct {
		CSV string `json:"csv"`
	}
	if err := c.do(ctx, "GET", "/statement?day="+day.UTC().Format("2006-01-02"), nil, &out); err != nil {
		return nil, err
	}
	recs, err := csv.NewReader(strings.NewReader(out.CSV)).ReadAll()
	if err != nil || len(recs) == 0 {
		return nil, fmt.Errorf("%w: statement is not the CSV it should be", ErrUnknown)
	}
	var lines []Line
	for _, r := range recs[1:] {
		if len(r) != 5 {
			return nil, fmt.Errorf("%w: statement line %q", ErrUnknown, r)
		}
		a, err := money.Parse(r[2])
		if err != nil {
			return nil, fmt.Errorf("%w: statement amount %q", ErrUnknown, r[2])
		}
		at, _ := time.Parse(time.RFC3339Nano, r[4])
		lines = append(lines, Line{Kind: r[0], ID: r[1], Amount: a, State: r[3], At: at})
	}
	return lines, nil
}

var _ Channel = (*Client)(nil)
