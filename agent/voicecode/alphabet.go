package voicecode

import "strings"

// alphabet is Crockford's base32: digits and upper-case letters without I,
// L, O and U. A symbol's value is its index.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

const invalid = 0xFF

// decodeTable maps an input byte to a symbol value, or invalid. Lower case
// is accepted; O reads as 0, I and L as 1 (Crockford's lenient decoding).
var decodeTable = func() (t [256]byte) {
	for i := range t {
		t[i] = invalid
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = byte(i)
		t[alphabet[i]|0x20] = byte(i) // lower case (digits map onto themselves)
	}
	for _, c := range "oO" {
		t[c] = 0
	}
	for _, c := range "iIlL" {
		t[c] = 1
	}
	return t
}()

// gfMul2 multiplies x by the generator a = 2 in GF(32) with the reduction
// polynomial x^5 + x^2 + 1.
func gfMul2(x byte) byte {
	x <<= 1
	if x&0x20 != 0 {
		x ^= 0x25
	}
	return x
}

// checkInterim runs Damm's algorithm over sym with the quasigroup
// x*y = 2x XOR y over GF(32), which is totally anti-symmetric: the result
// changes for every single-symbol change and every swap of two different
// neighbours.
func checkInterim(sym []byte) byte {
	var r byte
	for _, s := range sym {
		r = gfMul2(r) ^ s
	}
	return r
}

// checkSymbol returns the symbol that, appended to sym, makes the interim 0.
func checkSymbol(sym []byte) byte { return gfMul2(checkInterim(sym)) }

// phoneticWords is the spoken word of every symbol, by byte; "" for a
// byte that is not one.
var phoneticWords = [256]string{
	'0': "zero", '1': "one", '2': "two", '3': "three", '4': "four",
	'5': "five", '6': "six", '7': "seven", '8': "eight", '9': "nine",
	'A': "Alfa", 'B': "Bravo", 'C': "Charlie", 'D': "Delta", 'E': "Echo",
	'F': "Foxtrot", 'G': "Golf", 'H': "Hotel", 'J': "Juliett", 'K': "Kilo",
	'M': "Mike", 'N': "November", 'P': "Papa", 'Q': "Quebec", 'R': "Romeo",
	'S': "Sierra", 'T': "Tango", 'V': "Victor", 'W': "Whiskey", 'X': "X-ray",
	'Y': "Yankee", 'Z': "Zulu",
}

// Phonetic returns the code as a support agent reads it on the phone, one
// group at a time: "7KQF-..." becomes
// "7 K Q F - seven, Kilo, Quebec, Foxtrot / ...". Input that is not a
// well-formed grouped code is returned as it is.
func Phonetic(code string) string {
	// Every issuance reads its code out: one allocation, not one per word.
	n := 0
	for i := 0; i < len(code); i++ {
		if c := code[i]; c != '-' {
			if phoneticWords[c] == "" {
				return code
			}
			n += 2 + len(phoneticWords[c]) + 2
		}
	}
	var b strings.Builder
	b.Grow(n + 6*(strings.Count(code, "-")+1))
	for rest, first := code, true; ; first = false {
		g, after, more := strings.Cut(rest, "-")
		if !first {
			b.WriteString(" / ")
		}
		for i := 0; i < len(g); i++ {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteByte(g[i])
		}
		b.WriteString(" - ")
		for i := 0; i < len(g); i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(phoneticWords[g[i]])
		}
		if !more {
			return b.String()
		}
		rest = after
	}
}
