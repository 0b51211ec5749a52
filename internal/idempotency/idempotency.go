// Package idempotency is the one way Hongbao recognises a repeated
// request: a digest of what was asked (the operation and every field of the
// request, as JSON), stored with the idempotency key and compared when the
// key comes again. The ledger's operation records, the API's request keys
// and the coordinator's global transactions all compare these digests.
package idempotency

import (
	"crypto/sha256"
	"encoding/json"
)

// Digest is the SHA-256 of the operation's name and the request's JSON.
// Two requests have the same digest exactly when they ask the same thing.
func Digest(op string, req any) ([]byte, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(op))
	h.Write([]byte{0})
	h.Write(b)
	return h.Sum(nil), nil
}
