package server

import (
	"testing"
	"time"
)

// TestJudgeOwnerCode is the code-entry policy without a database.
func TestJudgeOwnerCode(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	code := &OwnerCode{ID: "c1", Serial: "S", KeyGeneration: 1, ExpiresAt: now.Add(time.Minute)}
	derive := func(OwnerCode) (string, error) { return "123456", nil }
	l := DefaultVerifyLimits
	tests := []struct {
		name    string
		f       OwnerCodeCheckFacts
		entered string
		match   bool
		reason  Reason
	}{
		{"match/digits", OwnerCodeCheckFacts{Registered: true, Code: code}, "123456", true, ""},
		{"match/read-out-with-a-space", OwnerCodeCheckFacts{Registered: true, Code: code}, "123 456", true, ""},
		{"refused/wrong-code", OwnerCodeCheckFacts{Registered: true, Code: code}, "123457", false, ReasonOwnerCodeMismatch},
		{"refused/prefix-is-not-a-match", OwnerCodeCheckFacts{Registered: true, Code: code}, "12345", false, ReasonOwnerCodeMismatch},
		{"refused/no-code-sent", OwnerCodeCheckFacts{Registered: true}, "123456", false, ReasonNoOwnerCode},
		{"refused/code-spent-by-wrong-entries", OwnerCodeCheckFacts{Registered: true, Code: &OwnerCode{ID: "c2", WrongEntries: 3}}, "123456", false, ReasonNoOwnerCode},
		{"refused/device-guessed-at-even-when-right", OwnerCodeCheckFacts{Registered: true, Code: code, Misses: Misses{Device: 5}}, "123456", false, ReasonGuessesPerDevice},
		{"refused/agent-guessing-even-when-right", OwnerCodeCheckFacts{Registered: true, Code: code, Misses: Misses{Agent: 10}}, "123456", false, ReasonGuessesPerAgent},
		{"refused/unknown-device", OwnerCodeCheckFacts{}, "123456", false, ReasonDeviceNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Now = now
			v, err := JudgeOwnerCode(l, tt.f, tt.entered, derive)
			if err != nil {
				t.Fatal(err)
			}
			var got Reason
			if v.Refusal != nil {
				got = v.Refusal.ReasonOf()
			}
			if v.Match != tt.match || got != tt.reason {
				t.Fatalf("match %v reason %q; want %v %q", v.Match, got, tt.match, tt.reason)
			}
			if (v.Event.Outcome == OutcomeSuccess) != tt.match {
				t.Fatalf("event outcome %s for match %v", v.Event.Outcome, tt.match)
			}
		})
	}
}

// FuzzJudgeOwnerCode: no entry matches unless its digits are the code's,
// and none panics. Seeds: the code, the code read out, near misses, and
// text that is not digits at all.
func FuzzJudgeOwnerCode(f *testing.F) {
	for _, s := range []string{"123456", "123 456", "123-456", "1234567", "12345", "", "abcdef", "１２３４５６", "123456\x00"} {
		f.Add(s)
	}
	code := &OwnerCode{ID: "c1", Serial: "S", KeyGeneration: 1}
	f.Fuzz(func(t *testing.T, entered string) {
		v, err := JudgeOwnerCode(DefaultVerifyLimits, OwnerCodeCheckFacts{Registered: true, Code: code}, entered,
			func(OwnerCode) (string, error) { return "123456", nil })
		if err != nil {
			t.Fatal(err)
		}
		if v.Match != (normaliseDigits(entered) == "123456") {
			t.Fatalf("%q: match %v", entered, v.Match)
		}
	})
}

// TestDecideOwnerRoute: the e-mail route's rules on top of DecideIssue.
func TestDecideOwnerRoute(t *testing.T) {
	now := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	ok := IssueDecision{Event: AuditEvent{Outcome: OutcomeSuccess}, Issuance: Issuance{ID: "i1"}}
	agent, boss := Actor{Subject: "a", Role: RoleAgent}, Actor{Subject: "s", Role: RoleSupervisor}
	tests := []struct {
		name   string
		f      IssueFacts
		reason Reason
		spend  string
		mail   bool
	}{
		{"issued/voice", IssueFacts{Actor: agent, Request: IssueRequest{Method: VerifyProofOfPurchase}}, "", "", false},
		{"refused/supervisor-required-after-misses", IssueFacts{Actor: agent, OwnerMisses: 3, Request: IssueRequest{Method: VerifyProofOfPurchase}}, ReasonSupervisorRequired, "", false},
		{"issued/supervisor-after-misses", IssueFacts{Actor: boss, OwnerMisses: 3, Request: IssueRequest{Method: VerifyProofOfPurchase}}, "", "", false},
		{"refused/email-code-not-verified", IssueFacts{Actor: agent, Request: IssueRequest{Method: VerifyOwnerEmailCode}}, ReasonOwnerCodeNotVerified, "", false},
		{"refused/email-code-verified-too-long-ago", IssueFacts{Actor: agent, OwnerCodeID: "c", OwnerCodeVerifiedAt: now.Add(-16 * time.Minute), Request: IssueRequest{Method: VerifyOwnerEmailCode}}, ReasonOwnerCodeNotVerified, "", false},
		{"issued/email-code-spent", IssueFacts{Actor: agent, OwnerCodeID: "c", OwnerCodeVerifiedAt: now.Add(-time.Minute), Request: IssueRequest{Method: VerifyOwnerEmailCode}}, "", "c", false},
		{"refused/email-delivery-without-address", IssueFacts{Actor: agent, OwnerContact: "+447700900789", Request: IssueRequest{Method: VerifyProofOfPurchase, Delivery: DeliveryEmail}}, ReasonNoEmailRegistered, "", false},
		{"issued/email-delivery-queued", IssueFacts{Actor: agent, OwnerContact: "Jane@Example.com", Request: IssueRequest{Method: VerifyProofOfPurchase, Delivery: DeliveryEmail}}, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.f.Now = now
			d := decideOwnerRoute(DefaultVerifyLimits, tt.f, ok)
			var got Reason
			if d.Refusal != nil {
				got = d.Refusal.ReasonOf()
			}
			if got != tt.reason || d.SpendOwnerCode != tt.spend || (d.Mail != nil) != tt.mail {
				t.Fatalf("reason %q spend %q mail %v; want %q %q %v", got, d.SpendOwnerCode, d.Mail != nil, tt.reason, tt.spend, tt.mail)
			}
			if d.Refusal != nil && (d.Event.Outcome != OutcomeRefused || d.Event.IssuanceID != "") {
				t.Fatalf("refusal event %+v", d.Event)
			}
			if d.Mail != nil && (d.Mail.Recipient != "jane@example.com" || d.Mail.IssuanceID != "i1" || d.Mail.VoiceShown) {
				t.Fatalf("mail %+v", d.Mail)
			}
		})
	}
}
