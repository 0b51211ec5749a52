package channel_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"hongbao/internal/channel"
)

func signedPost(c *channel.Client, path string, out any) error {
	return signedPostBody(c, path, "", out)
}

// signedPostBody calls a control endpoint of the simulator, as the test's
// payer or operator.
func signedPostBody(c *channel.Client, path, body string, out any) error {
	req, _ := http.NewRequest("POST", c.URL+path, bytes.NewReader([]byte(body)))
	channel.Sign(req.Header, c.Secret, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// A simulator that persists comes back with every order after a restart.
func TestSimulatorPersists(t *testing.T) {
	path := t.TempDir() + "/sim.jsonl"
	sim := channel.NewSimulator(secret, channel.Knobs{})
	if err := sim.Persist(path); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	c := channel.NewClient(srv.URL, secret, "")
	ctx := t.Context()
	if _, err := c.CreatePay(ctx, "p1", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePay(ctx, "p2", 200); err != nil {
		t.Fatal(err)
	}
	var paid channel.PayOrder
	if err := signedPost(c, "/control/pay/p1", &paid); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Payout(ctx, "w1", 7, 300); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	_ = sim.Close()
	again := channel.NewSimulator(secret, channel.Knobs{})
	if err := again.Persist(path); err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	srv = httptest.NewServer(again.Handler())
	defer srv.Close()
	c = channel.NewClient(srv.URL, secret, "")
	if p, err := c.QueryPay(ctx, "p1"); err != nil || p.State != channel.PayPaid {
		t.Fatalf("p1 %+v %v", p, err)
	}
	if p, err := c.QueryPay(ctx, "p2"); err != nil || p.State != channel.PayCreated {
		t.Fatalf("p2 %+v %v", p, err)
	}
	if p, err := c.Payout(ctx, "w1", 7, 300); err != nil || p.State != channel.PayoutSucceeded || again.PaidOut() != 1 {
		t.Fatalf("w1 %+v %v, paid out %d", p, err, again.PaidOut())
	}
}
