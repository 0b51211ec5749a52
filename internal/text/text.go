// Package text says what user-given text may hold.
package text

import (
	"unicode"
	"unicode/utf8"
)

// BadRune finds the first character one line of visible text (a
// greeting, an operator's note) may not hold:
// control characters (NUL, newlines, ANSI escapes), line and paragraph
// separators, invisible format characters such as bidi overrides and
// isolates, zero-width spaces or a BOM, invisible fillers, private-use and
// non-characters, and more than 4 combining marks on one character
// ("zalgo" text). The zero-width joiner, variation selectors and the tag
// characters stay allowed: emoji sequences and flags are built of them.
func BadRune(s string) (rune, bool) {
	marks := 0
	for _, r := range s {
		switch {
		case r == '\u200d' || (r >= 0xE0020 && r <= 0xE007F):
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r), unicode.Is(unicode.Co, r), unicode.Is(unicode.Zl, r), unicode.Is(unicode.Zp, r),
			r == utf8.RuneError, r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE,
			r == 0x115F, r == 0x1160, r == 0x3164, r == 0xFFA0, r == 0x2800:
			return r, true
		}
		if unicode.In(r, unicode.Mn, unicode.Me) && !unicode.Is(unicode.Variation_Selector, r) {
			if marks++; marks > 4 {
				return r, true
			}
		} else {
			marks = 0
		}
	}
	return 0, false
}
