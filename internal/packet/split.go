package packet

import (
	"math/rand/v2"
)

// luckyShare draws one share of a random ("lucky") packet by WeChat's
// double-average rule: uniform in [1, 2 x remaining/count] fen, capped so
// that every share still to come can have at least 1 fen; the last share
// takes whatever is left. The shares of a packet always sum to its amount.
func luckyShare(r *rand.Rand, remaining int64, count int) int64 {
	if count <= 1 {
		return remaining
	}
	hi := 2 * (remaining / int64(count))
	if most := remaining - int64(count-1); hi > most {
		hi = most
	}
	if hi < 1 {
		hi = 1
	}
	return 1 + r.Int64N(hi)
}

// equalShare is the next share of an equal packet: amount/shares each, the
// first amount%shares shares one fen more, so the sum is exact.
func equalShare(amount int64, shares, seq int) int64 {
	s := amount / int64(shares)
	if int64(seq) <= amount%int64(shares) {
		s++
	}
	return s
}
