package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"hongbao/internal/money"
	"hongbao/internal/packet"
)

// Property: an answer that writes its own JSON writes exactly what the
// encoder writes for it, whatever the values (extremes, zones, sub-second
// times), so that clients cannot tell the lean path from the plain one.
func TestLeanAnswers(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	ints := []int64{0, 1, -1, 99, 100, 101, math.MaxInt64, math.MinInt64, 1 << 53, -(1 << 53)}
	pick := func() int64 {
		if r.IntN(3) == 0 {
			return ints[r.IntN(len(ints))]
		}
		return r.Int64() >> r.IntN(63)
	}
	zones := []*time.Location{time.UTC, time.FixedZone("cst", 8*3600), time.FixedZone("odd", -(3*3600 + 30*60)), time.Local}
	for i := range 5000 {
		at := time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).In(zones[r.IntN(len(zones))])
		if i%7 == 0 {
			at = at.Truncate(time.Second) // no fraction at all
		}
		c := packet.Claim{ID: pick(), PacketID: pick(), User: pick(), Seq: int(pick()), Amount: money.Amount(pick()),
			At: at, Credited: r.IntN(2) == 0, Duplicate: r.IntN(2) == 0}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(grabResponse{Claim: c}); err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		writeJSON(rec, 200, grabResponse{Claim: c})
		if got := rec.Body.String(); got != want.String() {
			t.Fatalf("claim %+v:\n lean %s\n json %s", c, got, want.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
	}
}

// Property: the token body parser without reflection reads what it accepts
// exactly as encoding/json does, and leaves every other form to it.
func TestParseUserLikeJSON(t *testing.T) {
	t.Parallel()
	bodies := []string{`{"sub":1,"exp":2}`, `{"sub":0,"exp":0}`, `{"sub":-5,"exp":-0}`, `{"sub":007,"exp":1}`,
		`{"sub":9223372036854775807,"exp":1}`, `{"sub":9223372036854775808,"exp":1}`, `{"sub":1,"exp":2} `,
		`{"sub":1,"exp":2,"adm":true}`, `{"sub":1.5,"exp":2}`, `{"sub":1e3,"exp":2}`, `{"sub":1,"exp":}`, `{"sub":,"exp":1}`,
		`{"sub":-,"exp":1}`, `{"exp":2,"sub":1}`, `{"adm":true,"exp":3}`, `{"sub":1,"exp":2}}`, `{"sub": 1,"exp":2}`}
	r := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		sub, exp, off := r.Int64()>>r.IntN(63), r.Int64()>>r.IntN(63), r.Int64()>>r.IntN(63)
		bodies = append(bodies, fmt.Sprintf(`{"sub":%d,"exp":%d}`, sub, exp-off))
	}
	for _, b := range bodies {
		var fast Claims
		if !fast.parseUser([]byte(b)) {
			continue // left to encoding/json
		}
		var want Claims
		if err := json.Unmarshal([]byte(b), &want); err != nil || fast != want {
			t.Errorf("%s: fast %+v, json %+v (%v)", b, fast, want, err)
		}
	}
	var c Claims
	if !c.parseUser([]byte(`{"sub":42,"exp":1700000000}`)) || c != (Claims{User: 42, Expires: 1700000000}) {
		t.Errorf("the form IssueToken writes was not read: %+v", c)
	}
}

// A token is one string: a MAC whose last character differs only in the
// bits base64 leaves unused decodes to the same bytes, and is refused
// (found from outside: such a variant of a valid token was accepted).
func TestTokenMACCanonical(t *testing.T) {
	t.Parallel()
	secret := bytes.Repeat([]byte("k"), MinSecret)
	tok, err := IssueToken(secret, Claims{User: 5, Expires: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyToken(secret, tok, time.Now()); err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, tok[len(tok)-1])
	for low := 1; low < 4; low++ { // 32 bytes in 43 characters: the last one has 2 unused bits
		variant := tok[:len(tok)-1] + string(alphabet[last^low])
		if _, err := VerifyToken(secret, variant, time.Now()); !errors.Is(err, ErrBadToken) {
			t.Errorf("variant %q of a valid token: %v, want ErrBadToken", variant, err)
		}
	}
}
