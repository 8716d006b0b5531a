package mail_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/mail"
	"github.com/dvrhotline/hotline/server/postgres"
)

// TestGuessingAPhoneNumberFromItsMaskStops replays the search that found
// a registered phone number from its mask: every candidate the mask
// allows, one owner check each. It now stops at the fifth miss; the right
// number after that is refused like any other (the throttle judges
// nothing); every miss and refusal is audited; and the device's next
// issuance needs a supervisor.
func TestGuessingAPhoneNumberFromItsMaskStops(t *testing.T) {
	r := newRig(t, false)
	ctx := context.Background()
	const phone = "+447700900789"
	sn := r.device(phone)
	v, err := r.svc.LookupDevice(ctx, agent, sn)
	if err != nil {
		t.Fatal(err)
	}
	mask := v.Device.OwnerContact
	if mask != "+**********89" {
		t.Fatalf("mask = %q", mask)
	}
	tries, misses := 0, 0
	var stop error
	for n := 0; n < 1501 && stop == nil; n++ {
		guess := fmt.Sprintf("+%011d89", 44770090000+n) // candidates that fit the mask, the right one last
		if n == 1500 {
			guess = phone
		}
		tries++
		ok, err := r.svc.CheckOwner(ctx, agent, sn, guess)
		switch {
		case err != nil:
			stop = err
		case !ok:
			misses++
		}
	}
	if reason(stop) != server.ReasonGuessesPerDevice || misses != server.DefaultVerifyLimits.DeviceMisses || tries != misses+1 {
		t.Fatalf("search stopped after %d tries, %d misses, with %v; want %s after %d misses",
			tries, misses, stop, server.ReasonGuessesPerDevice, server.DefaultVerifyLimits.DeviceMisses)
	}
	if ok, err := r.svc.CheckOwner(ctx, agent, sn, phone); ok || reason(err) != server.ReasonGuessesPerDevice {
		t.Fatalf("the right number after the throttle = %v, %v: want the same refusal", ok, err)
	}
	// Another agent on the same device is stopped too.
	if _, err := r.svc.CheckOwner(ctx, server.Actor{Subject: "bob", Role: server.RoleAgent}, sn, phone); reason(err) != server.ReasonGuessesPerDevice {
		t.Fatalf("bob = %v", err)
	}
	evs, err := r.db.QueryAudit(ctx, server.Actor{Subject: "eve", Role: server.RoleAuditor},
		server.AuditFilter{Serial: sn, Action: server.ActionOwnerCheck, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var audMiss, audThrottled int
	for _, e := range evs {
		switch {
		case strings.HasPrefix(e.Detail, "owner_mismatch"):
			audMiss++
		case strings.HasPrefix(e.Detail, "throttled"):
			audThrottled++
		}
	}
	if audMiss != misses || audThrottled != 3 {
		t.Errorf("audit: %d misses, %d throttled; want %d and 3", audMiss, audThrottled, misses)
	}
	req := server.IssueRequest{RequestID: "r-1", Serial: sn, Ticket: "T-9", Method: server.VerifyProofOfPurchase}
	if _, err := r.svc.Issue(ctx, agent, req); reason(err) != server.ReasonSupervisorRequired {
		t.Fatalf("agent's issuance after the guessing = %v, want %s", err, server.ReasonSupervisorRequired)
	}
	if _, err := r.svc.Issue(ctx, boss, req); err != nil {
		t.Fatalf("supervisor's issuance: %v", err)
	}
}

// TestOneAgentGuessingAcrossDevicesStops: ten misses by one agent on ten
// devices stop their guesses on an eleventh.
func TestOneAgentGuessingAcrossDevicesStops(t *testing.T) {
	r := newRig(t, false)
	r.svc.Verify.AgentMisses = server.DefaultVerifyLimits.AgentMisses
	ctx := context.Background()
	mallory := server.Actor{Subject: "mallory", Role: server.RoleAgent}
	for i := range server.DefaultVerifyLimits.AgentMisses {
		sn := r.device(fmt.Sprintf("owner%d@example.com", i))
		if ok, err := r.svc.CheckOwner(ctx, mallory, sn, "guess@example.com"); ok || err != nil {
			t.Fatalf("miss %d = %v, %v", i, ok, err)
		}
	}
	sn := r.device("owner@example.com")
	if _, err := r.svc.CheckOwner(ctx, mallory, sn, "owner@example.com"); reason(err) != server.ReasonGuessesPerAgent {
		t.Fatalf("eleventh device = %v, want %s", err, server.ReasonGuessesPerAgent)
	}
	// A code entry is a guess too.
	if err := r.svc.VerifyOwnerCode(ctx, mallory, sn, "123456"); reason(err) != server.ReasonGuessesPerAgent {
		t.Fatalf("code entry = %v, want %s", err, server.ReasonGuessesPerAgent)
	}
}

// TestCodeEntriesAndSendsAreLimited: a code survives three wrong entries;
// an owner gets three codes an hour; a device without an e-mail gets none.
func TestCodeEntriesAndSendsAreLimited(t *testing.T) {
	r := newRig(t, false)
	ctx := context.Background()
	sn := r.device("jane@example.com")
	if _, err := r.svc.SendOwnerCode(ctx, agent, sn); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := r.svc.VerifyOwnerCode(ctx, agent, sn, "000000"); reason(err) != server.ReasonOwnerCodeMismatch && reason(err) != server.ReasonGuessesPerDevice {
			t.Fatalf("wrong entry %d = %v", i, err)
		}
	}
	if err := r.svc.VerifyOwnerCode(ctx, agent, sn, "000000"); reason(err) != server.ReasonNoOwnerCode {
		t.Fatalf("fourth entry = %v, want %s (the code is spent)", err, server.ReasonNoOwnerCode)
	}
	sn2 := r.device("joe@example.com")
	for i := range 3 {
		if _, err := r.svc.SendOwnerCode(ctx, agent, sn2); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if _, err := r.svc.SendOwnerCode(ctx, agent, sn2); reason(err) != server.ReasonSendsPerDevice {
		t.Fatalf("fourth send = %v, want %s", err, server.ReasonSendsPerDevice)
	}
	if _, err := r.svc.SendOwnerCode(ctx, agent, r.device("+447700900111")); reason(err) != server.ReasonNoEmailRegistered {
		t.Fatalf("phone-only device = %v, want %s", err, server.ReasonNoEmailRegistered)
	}
	if err := r.svc.VerifyOwnerCode(ctx, agent, sn2, "12345"); server.ErrorCode(err) != server.EInvalid {
		t.Fatalf("five digits = %v, want invalid", err)
	}
}

// TestTemporaryFailureIsRetriedPermanentGivesUp: a 451 at the end of DATA
// is retried (and then sent), a 550 is given up with the reply; both are
// audited with the reply and the Message-ID. Over implicit TLS.
func TestTemporaryFailureIsRetriedPermanentGivesUp(t *testing.T) {
	r := newRig(t, true)
	cfg := r.config()
	cfg.Security = mail.SecurityTLS
	m, err := mail.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.box.Mailer = m
	r.smtp.reply = func(n int, _ string) error {
		switch n {
		case 1:
			return errTemp
		case 3:
			return errPerm
		}
		return nil
	}
	ctx := context.Background()
	sn := r.device("jane@example.com")
	if _, err := r.svc.SendOwnerCode(ctx, agent, sn); err != nil {
		t.Fatal(err)
	}
	r.round()
	st, _ := r.svc.MailStatuses(ctx, agent, sn, 0)
	if st[0].State != server.MailQueued || st[0].Attempts != 1 || !strings.Contains(st[0].LastReply, "451") {
		t.Fatalf("after a 451: %+v", st[0])
	}
	r.round()
	st, _ = r.svc.MailStatuses(ctx, agent, sn, 0)
	if st[0].State != server.MailSent || st[0].Attempts != 2 {
		t.Fatalf("after the retry: %+v", st[0])
	}
	if _, err := r.svc.SendOwnerCode(ctx, agent, sn); err != nil {
		t.Fatal(err)
	}
	r.round()
	r.round()
	st, _ = r.svc.MailStatuses(ctx, agent, sn, 0)
	if st[0].State != server.MailFailed || st[0].Attempts != 1 || !strings.Contains(st[0].LastReply, "550") {
		t.Fatalf("after a 550: %+v", st[0])
	}
	if got := len(r.smtp.messages()); got != 1 {
		t.Errorf("%d messages accepted, want 1", got)
	}
	evs, err := r.db.QueryAudit(ctx, server.Actor{Subject: "eve", Role: server.RoleAuditor},
		server.AuditFilter{Serial: sn, Action: server.ActionMailAttempt, Limit: 100})
	if err != nil || len(evs) != 3 {
		t.Fatalf("attempt events = %d, %v; want 3", len(evs), err)
	}
	for _, e := range evs {
		if !strings.Contains(e.Detail, "message_id=<") || !strings.Contains(e.Detail, "reply=") {
			t.Errorf("attempt event without reply or Message-ID: %s", e.Detail)
		}
	}
}

// TestSMTPConfigRefused: plaintext off loopback, an unknown mode, a user
// without a password and a bad sender are refused with what was expected.
func TestSMTPConfigRefused(t *testing.T) {
	base := mail.Config{Addr: "smtp.example.com:587", Security: mail.SecuritySTARTTLS, From: "support@example.com"}
	tests := []struct {
		name string
		edit func(*mail.Config)
		want string
	}{
		{"refused/plain-off-loopback", func(c *mail.Config) { c.Security = mail.SecurityPlain }, "not a loopback"},
		{"refused/unknown-security", func(c *mail.Config) { c.Security = "ssl" }, "expected tls, starttls or plain"},
		{"refused/user-without-password", func(c *mail.Config) { c.Username = "u" }, "no password"},
		{"refused/bad-from", func(c *mail.Config) { c.From = "support" }, "mail-from"},
		{"refused/no-port", func(c *mail.Config) { c.Addr = "smtp.example.com" }, "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			if _, err := mail.New(c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	c := base
	c.Addr, c.Security = "127.0.0.1:25", mail.SecurityPlain
	if _, err := mail.New(c); err != nil {
		t.Fatalf("plain on loopback: %v", err)
	}
}

// queueCodes queues n owner codes on n devices.
func (r *rig) queueCodes(tb testing.TB, n int) {
	tb.Helper()
	r.svc.Verify.SendsPerAgent = 1 << 20
	for i := range n {
		sn := r.device(fmt.Sprintf("owner%d@example.com", i))
		if _, err := r.svc.SendOwnerCode(context.Background(), agent, sn); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestTwoSendersSendEachMessageOnce: two senders claiming concurrently
// (FOR UPDATE SKIP LOCKED) hand every message to the server exactly once.
func TestTwoSendersSendEachMessageOnce(t *testing.T) {
	r := newRig(t, false)
	r.queueCodes(t, 60)
	var wg sync.WaitGroup
	for _, name := range []string{"replica-a", "replica-b"} {
		ob := &server.Outbox{Service: r.svc, Mailer: r.mailer(t), Name: name, Batch: 7}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, err := ob.Round(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, m := range r.smtp.messages() {
		seen[header(m.Data, "Message-Id")]++
	}
	if len(seen) < 60 {
		t.Fatalf("%d distinct messages, want 60", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s sent %d times", id, n)
		}
	}
	var byA, byB int
	if err := r.db.Pool().QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE claimed_by = 'replica-a'),
		count(*) FILTER (WHERE claimed_by = 'replica-b') FROM mail_outbox WHERE state = 'sent'`).Scan(&byA, &byB); err != nil {
		t.Fatal(err)
	}
	t.Logf("replica-a sent %d, replica-b %d", byA, byB)
}

// TestSenderKilledMidSendIsNeverResent: a sender process is killed
// (SIGKILL) while the SMTP server holds its message's data; another
// sender never sends that message again: the reaper fails it as
// "delivery unknown", audited.
func TestSenderKilledMidSendIsNeverResent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a sender process")
	}
	r := newRig(t, false)
	ctx := context.Background()
	sn := r.device("jane@example.com")
	if _, err := r.svc.SendOwnerCode(ctx, agent, sn); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	r.smtp.onData = func(string) {
		once.Do(func() { close(got) })
		<-release
	}
	defer close(release)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOTLINE_TEST_SENDER=1", "HOTLINE_TEST_SENDER_DB="+testURL,
		"HOTLINE_TEST_SENDER_KEYRING="+r.kr.Dir(), "HOTLINE_TEST_SENDER_SMTP="+r.smtp.Addr,
		"HOTLINE_TEST_SENDER_CA="+r.smtp.CAFile, "HOTLINE_TEST_SENDER_USER="+r.smtp.User, "HOTLINE_SMTP_PASSWORD="+r.smtp.Pass)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the sender process never reached DATA")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	st, _ := r.svc.MailStatuses(ctx, agent, sn, 0)
	if st[0].State != server.MailSending {
		t.Fatalf("after the kill: %+v, want sending", st[0])
	}
	// A live sender does not touch a fresh claim, and fails a stale one.
	r.box.StaleAfter = time.Hour
	r.round()
	r.box.StaleAfter = time.Millisecond
	r.round()
	r.round()
	st, _ = r.svc.MailStatuses(ctx, agent, sn, 0)
	if st[0].State != server.MailFailed || st[0].Attempts != 1 || !strings.Contains(st[0].LastReply, "delivery unknown") {
		t.Fatalf("after reaping: %+v", st[0])
	}
	r.smtp.mu.Lock()
	seen := r.smtp.seen
	r.smtp.mu.Unlock()
	if seen > 1 {
		t.Fatalf("the server saw the message's data %d times", seen)
	}
	evs, _ := r.db.QueryAudit(ctx, server.Actor{Subject: "eve", Role: server.RoleAuditor},
		server.AuditFilter{Serial: sn, Action: server.ActionMailAttempt, Limit: 10})
	if len(evs) != 1 || !strings.Contains(evs[0].Detail, "delivery=unknown") {
		t.Fatalf("reap events = %+v", evs)
	}
}

// runSenderProcess is the sender the kill test starts: one round, as a
// replica runs it.
func runSenderProcess() int {
	ctx := context.Background()
	db, err := postgres.Open(ctx, os.Getenv("HOTLINE_TEST_SENDER_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	kr, err := keyring.Open(os.Getenv("HOTLINE_TEST_SENDER_KEYRING"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := mail.New(mail.Config{Addr: os.Getenv("HOTLINE_TEST_SENDER_SMTP"), Security: mail.SecuritySTARTTLS,
		Username: os.Getenv("HOTLINE_TEST_SENDER_USER"), Password: os.Getenv("HOTLINE_SMTP_PASSWORD"),
		From: "support@hotline.test", CAFile: os.Getenv("HOTLINE_TEST_SENDER_CA")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ob := &server.Outbox{Service: server.NewService(db, kr), Mailer: m, Name: "doomed-sender"}
	if _, err := ob.Round(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// BenchmarkOutboxSend: messages per second the outbox sender reaches
// against the in-process SMTP server (STARTTLS, auth), against a baseline
// of the same SMTP client sending the same number of composed messages on
// one connection without the outbox (no claim, no record), in the same
// run.
func BenchmarkOutboxSend(b *testing.B) {
	const batch = 50
	r := newRig(b, false)
	r.box.Batch = 1000
	mailer := r.box.Mailer
	var outbox, direct time.Duration
	for b.Loop() {
		b.StopTimer()
		r.queueCodes(b, batch)
		b.StartTimer()
		start := time.Now()
		if n, err := r.box.Round(context.Background()); err != nil || n != batch {
			b.Fatalf("round = %d, %v", n, err)
		}
		outbox += time.Since(start)
		msgs := make([]server.Mail, batch)
		for i := range msgs {
			msgs[i] = server.Mail{MessageID: fmt.Sprintf("<bench-%d@hotline.test>", i), To: "owner@example.com",
				Subject: "Your DVR support verification code", Body: strings.Repeat("a line of text\n", 12)}
		}
		start = time.Now()
		for _, res := range mailer.Send(context.Background(), msgs) {
			if res.Err != nil {
				b.Fatal(res.Err)
			}
		}
		direct += time.Since(start)
	}
	n := float64(b.N * batch)
	b.ReportMetric(n/outbox.Seconds(), "outbox-msgs/s")
	b.ReportMetric(n/direct.Seconds(), "direct-msgs/s")
	b.ReportMetric(direct.Seconds()/outbox.Seconds(), "outbox/direct")
}
