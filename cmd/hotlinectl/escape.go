package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
	"unicode/utf8"
)

// printable returns s as a terminal may show it without being steered by
// it: control characters (a newline would start a forged line, an escape
// sequence would rewrite the screen), bidirectional formatting characters
// (a right-to-left override reorders what follows), line and paragraph
// separators and invalid UTF-8 become Go escapes (\n, \u202e, \xff), and a
// backslash becomes two, so that an escape shown is never text the server
// sent.
func printable(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafeRune(r):
			q := strconv.QuoteRuneToASCII(r) // '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// unsafeRune reports whether printable escapes r.
func unsafeRune(r rune) bool {
	return r == '\\' || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) ||
		unicode.In(r, unicode.Zl, unicode.Zp) || r == utf8.RuneError
}

// textTable is a tabwriter whose Printf escapes every string and
// fmt.Stringer argument with printable: the table's own tabs and newlines
// are the format's, never the data's.
type textTable struct{ *tabwriter.Writer }

func table(w io.Writer) textTable { return textTable{tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)} }

// Printf writes one formatted row (or part of one).
func (t textTable) Printf(format string, args ...any) {
	fmt.Fprintf(t.Writer, format, escapeArgs(args)...)
}

// printf is fmt.Fprintf with its arguments escaped by printable, for the
// lines printed outside tables.
func printf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, format, escapeArgs(args)...)
}

func escapeArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = printable(v)
		case error:
			out[i] = printable(v.Error())
		case fmt.Stringer:
			out[i] = printable(v.String())
		default:
			out[i] = a
		}
	}
	return out
}
