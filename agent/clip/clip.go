// Package clip bounds untrusted text before it is quoted in an error
// message, an audit event or a log line, without splitting a UTF-8
// character. The DVR agent, the server, its store, the import-file reader
// and the staff tool share it. It imports only the standard library.
package clip

import "unicode/utf8"

// Clip returns s cut to at most n bytes, on a rune boundary.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n < 0 {
		n = 0
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Quote returns s cut like Clip with "..." appended when it was cut, for a
// message that should show that there was more.
func Quote(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return Clip(s, n) + "..."
}
