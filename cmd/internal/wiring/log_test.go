package wiring

import (
	"strings"
	"testing"
)

// TestLogsNeverCarrySecrets: attributes named after secrets and passwords
// inside URLs are redacted by the server's log (NewLogger).
func TestLogsNeverCarrySecrets(t *testing.T) {
	var b strings.Builder
	log := NewLogger(&b)
	log.Info("x", "token", "eyJhbGciOi.secret.token", "voice_code", "8TQF-816W-X3EM-998J",
		"dsn", "postgres://app:hunter2@db:5432/hotline", "serial", "JZ6OES#2017-08-01#3#DVR1101134C08011")
	out := b.String()
	for _, secret := range []string{"eyJhbGciOi", "8TQF-816W", "hunter2"} {
		if strings.Contains(out, secret) {
			t.Errorf("log line carries %q: %s", secret, out)
		}
	}
	if !strings.Contains(out, "DVR1101134C08011") {
		t.Errorf("log line lost a non-secret attribute: %s", out)
	}
}
