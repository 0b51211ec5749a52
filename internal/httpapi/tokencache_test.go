package httpapi

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

var cacheSecret = []byte("cache-secret-cache-secret-cache-secret")

// A cached token still expires, a forged one is never let in, and the
// cache stays within its size.
func TestTokenCache(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newTokenCache(10)
	tok, err := IssueToken(cacheSecret, Claims{User: 7, Expires: now.Add(time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if cl, err := c.verify(cacheSecret, tok, now); err != nil || cl.User != 7 {
			t.Fatalf("%+v %v", cl, err)
		}
	}
	if _, err := c.verify(cacheSecret, tok, now.Add(time.Minute)); !errors.Is(err, ErrExpired) {
		t.Fatalf("a cached token past its expiry: %v", err)
	}
	forged := tok[:len(tok)-2] + "AA"
	for range 2 {
		if _, err := c.verify(cacheSecret, forged, now); !errors.Is(err, ErrBadToken) {
			t.Fatalf("forged: %v", err)
		}
	}
	if _, err := c.verify([]byte("another-secret-another-secret-another"), "x.y", now); !errors.Is(err, ErrBadToken) {
		t.Fatalf("garbage: %v", err)
	}
	for u := range int64(100) {
		tk, _ := IssueToken(cacheSecret, Claims{User: u + 1, Expires: now.Add(time.Hour).Unix()})
		if _, err := c.verify(cacheSecret, tk, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.cur) + len(c.prev); n > 10 {
		t.Fatalf("%d tokens kept, size 10", n)
	}
}

// BenchmarkVerify compares a cached verification with a full one.
func BenchmarkVerify(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	toks := make([]string, 1000)
	for i := range toks {
		toks[i], _ = IssueToken(cacheSecret, Claims{User: int64(i + 1), Expires: now.Add(time.Hour).Unix()})
	}
	b.Run("full", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := VerifyToken(cacheSecret, toks[i%len(toks)], now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newTokenCache(100_000)
		for i := 0; b.Loop(); i++ {
			if _, err := c.verify(cacheSecret, toks[i%len(toks)], now); err != nil {
				b.Fatal(fmt.Sprint(err))
			}
		}
	})
}
