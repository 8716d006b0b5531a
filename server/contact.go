package server

import (
	"crypto/subtle"
	"strings"
	"unicode"
)

// NormaliseContact returns the form an owner contact is stored and compared
// in: e-mail addresses trimmed and lower-cased, phone numbers reduced to
// digits with a leading "+" (a leading "00" is read as "+"). Anything else
// is trimmed only.
func NormaliseContact(s string) string {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "@") {
		return strings.ToLower(s)
	}
	if isPhoneLike(s) {
		var b strings.Builder
		if strings.HasPrefix(s, "+") {
			b.WriteByte('+')
		}
		for _, r := range s {
			if '0' <= r && r <= '9' {
				b.WriteRune(r)
			}
		}
		p := b.String()
		if strings.HasPrefix(p, "00") {
			p = "+" + p[2:]
		}
		return p
	}
	return s
}

// isPhoneLike reports whether s holds only digits and phone punctuation.
func isPhoneLike(s string) bool {
	digits := 0
	for i, r := range s {
		switch {
		case '0' <= r && r <= '9':
			digits++
		case r == '+' && i == 0:
		case r == ' ' || r == '-' || r == '.' || r == '(' || r == ')':
		default:
			return false
		}
	}
	return digits > 0
}

// ValidContact reports whether s (normalised) looks like an e-mail address
// or an international phone number, and if not what was expected.
func ValidContact(s string) (ok bool, expected string) {
	const want = "an e-mail address like jane@example.com or a phone number like +44 7700 900789"
	if len(s) > 254 || s == "" {
		return false, want
	}
	if at := strings.LastIndexByte(s, '@'); at >= 0 {
		local, domain := s[:at], s[at+1:]
		if local == "" || !strings.Contains(domain, ".") || strings.HasPrefix(domain, ".") || strings.HasSuffix(domain, ".") ||
			strings.ContainsFunc(s, unicode.IsSpace) || strings.Count(s, "@") != 1 {
			return false, want
		}
		return true, ""
	}
	if isPhoneLike(s) {
		n := len(strings.TrimPrefix(s, "+"))
		if n >= 7 && n <= 15 {
			return true, ""
		}
	}
	return false, want
}

// MaskContact returns a contact as staff may see it: enough to recognise,
// not enough to use. "jane@example.com" becomes "j***@example.com",
// "+447700900789" becomes "+**********89" (the last two digits only: each
// digit shown is a factor of ten fewer guesses); anything else keeps only
// its first character.
func MaskContact(s string) string {
	s = NormaliseContact(s)
	if s == "" {
		return ""
	}
	if at := strings.LastIndexByte(s, '@'); at > 0 {
		r := []rune(s[:at])
		return string(r[0]) + "***" + s[at:]
	}
	if isPhoneLike(s) {
		plus := strings.HasPrefix(s, "+")
		d := strings.TrimPrefix(s, "+")
		tail := min(2, len(d)/2)
		out := strings.Repeat("*", len(d)-tail) + d[len(d)-tail:]
		if plus {
			out = "+" + out
		}
		return out
	}
	r := []rune(s)
	return string(r[0]) + "***"
}

// ContactMatchKey is the form two contacts are compared in: "e:" and the
// trimmed, lower-cased address for an e-mail, "p:" and the digits alone for
// anything else (so "+44 20 7946 0000" matches "44 20 79460000"), "" when
// there is nothing to compare.
func ContactMatchKey(c string) string {
	c = strings.TrimSpace(c)
	if strings.Contains(c, "@") {
		return "e:" + strings.ToLower(c)
	}
	var b strings.Builder
	for i := 0; i < len(c); i++ {
		if '0' <= c[i] && c[i] <= '9' {
			b.WriteByte(c[i])
		}
	}
	if b.Len() == 0 {
		return ""
	}
	return "p:" + b.String()
}

// OwnerVerdict is the service's judgement of a claimed owner contact.
type OwnerVerdict struct {
	// Match is true when the claim is the registered contact.
	Match bool
	// Detail is the audit detail of a mismatch ("owner_mismatch", and
	// "no_contact_registered" when there was nothing to compare with).
	Detail string
	// Refusal, when set, refuses the check unjudged (a miss limit).
	Refusal *Error
}

// JudgeOwner compares claimed with the registered contact by their
// ContactMatchKey, in constant time. A device without a registered contact
// matches nothing.
func JudgeOwner(registered, claimed string) OwnerVerdict {
	r, c := ContactMatchKey(registered), ContactMatchKey(claimed)
	switch {
	case r == "":
		return OwnerVerdict{Detail: "owner_mismatch no_contact_registered"}
	case c != "" && subtle.ConstantTimeCompare([]byte(r), []byte(c)) == 1:
		return OwnerVerdict{Match: true}
	}
	return OwnerVerdict{Detail: "owner_mismatch"}
}
