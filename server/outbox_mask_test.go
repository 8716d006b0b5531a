package server

import "testing"

// TestSMTPRepliesNeverQuoteTheOwnersAddress: a refusal that echoes the
// recipient is stored and shown with the address masked.
func TestSMTPRepliesNeverQuoteTheOwnersAddress(t *testing.T) {
	tests := []struct{ name, reply, want string }{
		{"masked/rcpt-refusal", "550 5.1.1 <Jane.Doe@Example.com>: Recipient address rejected", "550 5.1.1 <j***@example.com>: Recipient address rejected"},
		{"masked/client-library-suffix", "not sent: 550 no (affected recipient(s): jane.doe@example.com, jane.doe@example.com)",
			"not sent: 550 no (affected recipient(s): j***@example.com, j***@example.com)"},
		{"kept/reply-without-the-address", "250 2.0.0 Ok: queued as 4F2", "250 2.0.0 Ok: queued as 4F2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := maskRecipient(tt.reply, "jane.doe@example.com"); got != tt.want {
				t.Errorf("maskRecipient(%q) = %q, want %q", tt.reply, got, tt.want)
			}
		})
	}
}
