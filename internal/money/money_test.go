package money

import (
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"testing/quick"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Amount
		err  error
	}{
		{"0", 0, nil},
		{"12", 1200, nil},
		{"12.3", 1230, nil},
		{"12.34", 1234, nil},
		{"0.01", 1, nil},
		{"-0.01", -1, nil},
		{"007.50", 750, nil},
		{"10000000000000.00", Max, nil},
		{"-10000000000000.00", -Max, nil},
		{"10000000000000.01", 0, ErrRange},
		{"-10000000000000.01", 0, ErrRange},
		{"92233720368547758.07", 0, ErrRange},
		{"-92233720368547758.08", 0, ErrRange},
		{"92233720368547758.08", 0, ErrRange},
		{"184467440737095516.16", 0, ErrRange},
		{"99999999999999999999", 0, ErrRange},
		{"", 0, ErrSyntax},
		{"-", 0, ErrSyntax},
		{".5", 0, ErrSyntax},
		{"5.", 0, ErrSyntax},
		{"+5", 0, ErrSyntax},
		{" 5", 0, ErrSyntax},
		{"1e3", 0, ErrSyntax},
		{"1,00", 0, ErrSyntax},
		{"1.2.3", 0, ErrSyntax},
		{"--1", 0, ErrSyntax},
		{"1.234", 0, ErrPrecision},
		{"NaN", 0, ErrSyntax},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("Parse(%q) = %d, %v; want %d, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestParsePositive(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"0", "0.00", "-1"} {
		if _, err := ParsePositive(in); !errors.Is(err, ErrNotPositive) {
			t.Errorf("ParsePositive(%q) err = %v, want ErrNotPositive", in, err)
		}
	}
	if a, err := ParsePositive("0.01"); err != nil || a != 1 {
		t.Errorf("ParsePositive(0.01) = %d, %v", a, err)
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	for a, want := range map[Amount]string{0: "0.00", 1: "0.01", -1: "-0.01", 1234: "12.34", -100: "-1.00", math.MinInt64: "-92233720368547758.08"} {
		if got := a.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int64(a), got, want)
		}
	}
}

// Property: every amount within Max survives String then Parse, and every
// amount beyond it is refused as out of range.
func TestRoundTripProperty(t *testing.T) {
	t.Parallel()
	f := func(v int64) bool {
		got, err := Parse(Amount(v).String())
		if v > int64(Max) || v < -int64(Max) {
			return errors.Is(err, ErrRange)
		}
		return err == nil && got == Amount(v)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
	in := func(v int64) bool { return f(v % (int64(Max) + 1)) }
	if err := quick.Check(in, &quick.Config{MaxCount: 20000}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64, -int64(Max), int64(Max), int64(Max) + 1, -1, 0, 1} {
		if !f(v) {
			t.Errorf("round trip failed for %d", v)
		}
	}
}

// Property: the sum of any two amounts that Parse accepts fits in int64.
func TestNoOverflowProperty(t *testing.T) {
	t.Parallel()
	f := func(a, b int64) bool {
		x, errA := Parse(Amount(a).String())
		y, errB := Parse(Amount(b).String())
		if errA != nil || errB != nil {
			return true
		}
		s := int64(x) + int64(y)
		return (x >= 0) != (y >= 0) || (s >= 0) == (x >= 0)
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 20000, Values: nil}); err != nil {
		t.Fatal(err)
	}
	if !f(int64(Max), int64(Max)) || !f(-int64(Max), -int64(Max)) {
		t.Fatal("Max + Max overflows")
	}
}

// Property: Parse agrees with an independent integer reading of "w.ff".
func TestParseMatchesIntegerProperty(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		w := r.Int64N(int64(Max) / 100)
		f := r.Int64N(100)
		s := strconv.FormatInt(w, 10) + "." + strconv.FormatInt(f/10, 10) + strconv.FormatInt(f%10, 10)
		got, err := Parse(s)
		if err != nil || int64(got) != w*100+f {
			t.Fatalf("Parse(%q) = %d, %v; want %d", s, got, err, w*100+f)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "12.34", "-0.01", "1e3", "", ".", "92233720368547758.07"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		// Anything accepted formats back to a string that parses to the same value.
		b, err := Parse(a.String())
		if err != nil || a != b {
			t.Fatalf("Parse(%q)=%d, reparse %q = %d, %v", s, a, a.String(), b, err)
		}
	})
}

func TestJSONText(t *testing.T) {
	t.Parallel()
	var a Amount
	if err := a.UnmarshalText([]byte("1.5")); err != nil || a != 150 {
		t.Fatalf("UnmarshalText = %d, %v", a, err)
	}
	if err := a.UnmarshalText([]byte("1.555")); err == nil {
		t.Fatal("UnmarshalText accepted 1.555")
	}
	b, _ := Amount(150).MarshalText()
	if string(b) != "1.50" {
		t.Fatalf("MarshalText = %s", b)
	}
}
