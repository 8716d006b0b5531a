// Package password checks a new admin password against the vendor's policy,
// which the DVR enforces after a temporary password was accepted: 6 to 32
// characters, with at least two of the four kinds digits, lower case, upper
// case and special characters.
//
// Only what the DVR's on-screen keyboard can type is allowed: printable
// ASCII without space. "Special" means exactly the 32 ASCII punctuation
// characters
//
//	! " # $ % & ' ( ) * + , - . / : ; < = > ? @ [ \ ] ^ _ ` { | } ~
//
// Space is refused: the DVR masks what is typed, so a leading or trailing
// space would be invisible and would lock the owner out a second time.
// Control characters and anything outside ASCII (accented letters, emoji)
// are refused because the keyboard cannot type them at the login prompt.
//
// The package imports only the standard library: the DVR agent links it.
package password

import (
	"fmt"
	"unicode/utf8"
)

// Policy limits. They are the vendor's published rules.
const (
	MinLen   = 6
	MaxLen   = 32
	MinKinds = 2
)

// Rule names the rule a password broke. The values are stable: the DVR
// firmware may match on them.
type Rule string

// The rules, in the order Check applies them.
const (
	// RuleCharacters: a character the DVR keyboard cannot type.
	RuleCharacters Rule = "characters"
	// RuleLength: fewer than MinLen or more than MaxLen characters.
	RuleLength Rule = "length"
	// RuleKinds: fewer than MinKinds of the four kinds.
	RuleKinds Rule = "kinds"
)

// Error says which rule a password broke and how to fix it.
type Error struct {
	Rule Rule
	// Message is a sentence for the person at the DVR.
	Message string
}

// Error implements error.
func (e *Error) Error() string { return "password: " + e.Message }

// Kind is one of the four kinds of character.
type Kind uint8

// The four kinds, as a bit set.
const (
	Digit Kind = 1 << iota
	Lower
	Upper
	Special
)

// KindOf returns the kind of the byte c, or 0 if c is not allowed in a
// password (space, control characters, bytes outside ASCII).
func KindOf(c byte) Kind {
	switch {
	case '0' <= c && c <= '9':
		return Digit
	case 'a' <= c && c <= 'z':
		return Lower
	case 'A' <= c && c <= 'Z':
		return Upper
	case '!' <= c && c <= '~':
		// The rest of printable ASCII without space: punctuation.
		return Special
	}
	return 0
}

// Check returns nil if pw satisfies the policy, else an *Error naming the
// first rule it breaks: characters, then length, then kinds.
func Check(pw string) error {
	var kinds Kind
	for i := 0; i < len(pw); i++ {
		c := pw[i]
		k := KindOf(c)
		if k != 0 {
			kinds |= k
			continue
		}
		switch {
		case c == ' ':
			return &Error{Rule: RuleCharacters, Message: fmt.Sprintf("character %d is a space: spaces are not allowed (they are invisible on the masked input)", i+1)}
		case c < ' ' || c == 0x7f:
			return &Error{Rule: RuleCharacters, Message: fmt.Sprintf("character %d is a control character (%#02x): use letters, digits and punctuation only", i+1, c)}
		default:
			r, _ := utf8.DecodeRuneInString(pw[i:])
			what := fmt.Sprintf("%q", r)
			if r == utf8.RuneError {
				what = fmt.Sprintf("byte %#02x (not valid UTF-8)", c)
			}
			return &Error{Rule: RuleCharacters, Message: fmt.Sprintf("character %d is %s, which the DVR keyboard cannot type: use ASCII letters, digits and punctuation only", i+1, what)}
		}
	}
	if len(pw) < MinLen || len(pw) > MaxLen {
		return &Error{Rule: RuleLength, Message: fmt.Sprintf("%d characters: expected %d to %d", len(pw), MinLen, MaxLen)}
	}
	if n := count(kinds); n < MinKinds {
		return &Error{Rule: RuleKinds, Message: fmt.Sprintf("only %s: use at least %d of the four kinds digits, lower case, upper case and special characters (%s)", kinds, MinKinds, specials)}
	}
	return nil
}

const specials = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

func count(k Kind) int {
	n := 0
	for ; k != 0; k &= k - 1 {
		n++
	}
	return n
}

// String names the kinds in k, e.g. "digits" or "lower case and digits".
func (k Kind) String() string {
	var names []string
	for _, p := range []struct {
		k Kind
		n string
	}{{Digit, "digits"}, {Lower, "lower case"}, {Upper, "upper case"}, {Special, "special characters"}} {
		if k&p.k != 0 {
			names = append(names, p.n)
		}
	}
	switch len(names) {
	case 0:
		return "no characters"
	case 1:
		return names[0]
	}
	s := names[0]
	for _, n := range names[1 : len(names)-1] {
		s += ", " + n
	}
	return s + " and " + names[len(names)-1]
}
