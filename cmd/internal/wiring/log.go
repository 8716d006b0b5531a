package wiring

import (
	"io"
	"log/slog"
	"net/url"
	"strings"
)

// secretAttrs are log attribute names whose values are never written: no
// code path logs them today, and this keeps a future one from doing so.
var secretAttrs = map[string]bool{
	"token": true, "authorization": true, "grant": true, "voice_code": true, "code": true,
	"password": true, "key": true, "seed": true, "secret": true, "database_url": true,
}

// NewLogger returns the server's structured log: JSON lines on w, secret
// attributes redacted (Redact).
func NewLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{ReplaceAttr: Redact}))
}

// Redact is the log handler's ReplaceAttr: secret attributes become
// "REDACTED", and a URL's password is masked wherever it appears.
func Redact(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		// The handler passes the level as a value it would encode through
		// encoding/json; its name is the same text, written directly.
		if l, ok := a.Value.Any().(slog.Level); ok {
			return slog.String(a.Key, l.String())
		}
	}
	if secretAttrs[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "REDACTED")
	}
	if a.Value.Kind() == slog.KindString {
		if v := a.Value.String(); strings.Contains(v, "://") && strings.Contains(v, "@") {
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, has := u.User.Password(); has {
					u.User = url.UserPassword(u.User.Username(), "REDACTED")
					return slog.String(a.Key, u.String())
				}
			}
		}
	}
	return a
}
