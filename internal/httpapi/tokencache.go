package httpapi

import (
	"sync"
	"time"
)

// tokenCache remembers tokens whose signature was verified, so that a
// client's next requests skip the base64, HMAC and JSON of verifying
// again. It is bounded (two generations of at most half the size each:
// the older one is dropped whole when the newer fills) and it never
// outlives a token: the expiry is checked on every hit. A token that
// failed verification is never cached.
type tokenCache struct {
	mu        sync.Mutex
	half      int
	cur, prev map[string]Claims
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{half: max(size/2, 1), cur: map[string]Claims{}}
}

// verify answers from the cache, or verifies and remembers.
func (c *tokenCache) verify(secret []byte, token string, now time.Time) (Claims, error) {
	c.mu.Lock()
	cl, ok := c.cur[token]
	if !ok {
		if cl, ok = c.prev[token]; ok {
			c.put(token, cl)
		}
	}
	c.mu.Unlock()
	if ok {
		if now.Unix() >= cl.Expires {
			return Claims{}, ErrExpired
		}
		return cl, nil
	}
	cl, err := VerifyToken(secret, token, now)
	if err != nil {
		return cl, err
	}
	c.mu.Lock()
	c.put(token, cl)
	c.mu.Unlock()
	return cl, nil
}

func (c *tokenCache) put(token string, cl Claims) {
	if len(c.cur) >= c.half {
		c.prev, c.cur = c.cur, make(map[string]Claims, c.half)
	}
	c.cur[token] = cl
}
