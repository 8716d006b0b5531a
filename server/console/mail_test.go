package console

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/mail"
	"github.com/dvrhotline/hotline/server/mail/smtptest"
)

// mailRig is a harness whose outbox sends to a real SMTP server.
type mailRig struct {
	*harness
	smtp *smtptest.Server
	ob   *server.Outbox
}

func newMailRig(t *testing.T) *mailRig {
	t.Helper()
	h := newHarness(t, Config{})
	d := smtptest.Start(t)
	m, err := mail.New(mail.Config{Addr: d.Addr, Security: mail.SecurityPlain, From: "DVR Support <support@hotline.test>", Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ob := &server.Outbox{Service: h.svc, Mailer: m, Name: "console-test"}
	h.svc.Outbox = ob
	return &mailRig{harness: h, smtp: d, ob: ob}
}

var ownerN int

// owner returns an e-mail address no other test uses.
func owner() string {
	serialMu.Lock()
	defer serialMu.Unlock()
	ownerN++
	return fmt.Sprintf("kim.%d.%d@example.com", time.Now().UnixNano()%1e6, ownerN)
}

// send posts the send-code form and returns the page it leads to.
func (r *mailRig) send(id, cookie string) (*http.Response, string) {
	r.t.Helper()
	resp, body := r.do("POST", "/devices/"+id+"/owner-code/send", cookie, url.Values{})
	if resp.StatusCode != http.StatusSeeOther {
		return resp, body
	}
	loc, _, _ := strings.Cut(resp.Header.Get("Location"), "#")
	return r.do("GET", loc, cookie, nil)
}

// deliver runs one outbox round and returns the n-th message to rcpt
// (counting from 1), read from the SMTP server.
func (r *mailRig) deliver(rcpt string, n int) smtptest.Message {
	r.t.Helper()
	if _, err := r.ob.Round(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	msgs := r.smtp.WaitFor(rcpt, n, 10*time.Second)
	if len(msgs) < n {
		r.t.Fatalf("%d messages reached %s, want %d", len(msgs), rcpt, n)
	}
	return msgs[n-1]
}

// text is a page's text as the browser shows it (tags dropped, entities
// decoded), to compare with the service's messages.
func text(page string) string {
	return html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, ""))
}

func (h *harness) issuances(serial string) []server.Issuance {
	h.t.Helper()
	p, err := h.svc.Issuances(context.Background(), server.Actor{Subject: "t", Role: server.RoleSupervisor}, serial, 0, "")
	if err != nil {
		h.t.Fatal(err)
	}
	return p.Issuances
}

// TestOwnerCodeReadBackIssuesByEmailWithNoCodeOnScreen is the e-mail
// route in the console: the agent sends a code to the masked address,
// enters what the caller reads from the real message, issues with e-mail
// delivery only, and sees neither the address nor the temporary password,
// which the owner's message carries.
func TestOwnerCodeReadBackIssuesByEmailWithNoCodeOnScreen(t *testing.T) {
	r := newMailRig(t)
	addr := owner()
	masked := server.MaskContact(addr)
	serial, id := r.register(addr)
	v := r.signIn("alice", server.RoleAgent)

	_, page := r.do("GET", "/devices/"+id, v, nil)
	if !strings.Contains(text(page), "Send a code to the owner's e-mail ("+masked+")") || !strings.Contains(page, `id="delivery-email"`) {
		t.Fatal("the device page offers no e-mail code or e-mail delivery for an owner with an address")
	}
	resp, page := r.send(id, v)
	if resp.StatusCode != http.StatusOK || !strings.Contains(text(page), "A code was sent to "+masked+" (queued, not sent yet)") {
		t.Fatalf("after sending: %d, the page does not say the code went to %s:\n%s", resp.StatusCode, masked, text(page))
	}
	code := smtptest.OwnerCode(r.deliver(addr, 1).Body())
	if code == "" {
		t.Fatal("the message carries no code")
	}
	resp, page = r.do("POST", "/devices/"+id+"/owner-code/verify", v, url.Values{"owner_code": {code[:3] + " " + code[3:]}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(text(page), "The caller read back the code sent to "+masked) ||
		!regexp.MustCompile(`value="5" required checked`).MatchString(page) {
		t.Fatalf("the right code: %d, the issue form does not choose the e-mail code method", resp.StatusCode)
	}
	form := url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-31"}, "method": {"5"}, "delivery": {"2"}}
	resp, reveal := r.do("POST", "/devices/"+id+"/issue", v, form)
	if resp.StatusCode != http.StatusOK || strings.Contains(reveal, `id="voice-code"`) || strings.Contains(reveal, "data-copy") ||
		!strings.Contains(text(reveal), "The temporary password was sent to "+masked) || !strings.Contains(reveal, `id="mail-state"`) {
		t.Fatalf("e-mail-only issue: %d, the reveal shows a code or no delivery:\n%s", resp.StatusCode, text(reveal))
	}
	voice := smtptest.VoiceCode(r.deliver(addr, 2).Body())
	if voice == "" {
		t.Fatal("the owner's message carries no temporary password")
	}
	for _, p := range []string{reveal, page} {
		if strings.Contains(p, voice) || strings.Contains(p, strings.ReplaceAll(voice, "-", "")) || strings.Contains(p, addr) {
			t.Fatal("a page shows the mailed code or the owner's full address")
		}
	}
	iss := r.issuances(serial)
	if len(iss) != 1 || iss[0].Method != server.VerifyOwnerEmailCode {
		t.Fatalf("issuances %+v: want one, checked by the owner's e-mail code", iss)
	}
	// Showing it again shows no code either.
	if _, again := r.do("POST", "/devices/"+id+"/show-again", v, form); strings.Contains(again, `id="voice-code"`) || strings.Contains(again, voice) ||
		!strings.Contains(again, `id="mailed-to"`) {
		t.Fatal("showing an e-mailed code again showed it")
	}
	_, page = r.do("GET", "/devices/"+id, v, nil)
	rows := regexp.MustCompile(`<tr id="mail-[^"]+">.*?</tr>`).FindAllString(page, -1)
	if len(rows) != 2 || !strings.Contains(rows[0], "temporary password") || !strings.Contains(rows[1], "verification code") ||
		!strings.Contains(rows[0], "mail-sent") || !strings.Contains(rows[0], masked) || !strings.Contains(page, "owner e-mail code") {
		t.Fatalf("the device's deliveries after a reload: %q", rows)
	}
	evs, _, err := r.svc.QueryAudit(context.Background(), server.Actor{Subject: "t", Role: server.RoleAuditor}, server.AuditFilter{Serial: serial, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	acts := map[server.Action]bool{}
	for _, ev := range evs {
		if ev.Outcome == server.OutcomeSuccess && strings.HasPrefix(ev.ClientAddr, "console:") && ev.Actor == "alice" {
			acts[ev.Action] = true
		}
		if strings.Contains(ev.Detail, code) {
			t.Errorf("the audit event %s carries the owner code", ev.Action)
		}
	}
	for _, a := range []server.Action{server.ActionOwnerCodeSend, server.ActionOwnerCodeCheck, server.ActionIssue} {
		if !acts[a] {
			t.Errorf("no successful %s by alice from the console in the audit log", a)
		}
	}
}

// TestWrongCodeEntriesAreCountedThenThrottled: each wrong entry says how
// many are left in the service's words and what to do in the floor's;
// the code dies after its entries; three misses make the next issuance a
// supervisor's, and five stop every further code on the device.
func TestWrongCodeEntriesAreCountedThenThrottled(t *testing.T) {
	r := newMailRig(t)
	addr := owner()
	_, id := r.register(addr)
	v := r.signIn("alice", server.RoleAgent)
	r.send(id, v)
	code := smtptest.OwnerCode(r.deliver(addr, 1).Body())
	wrong := fmt.Sprintf("%06d", (atoiDigits(code)+1)%1000000)
	enter := func(c string) (int, string) {
		resp, page := r.do("POST", "/devices/"+id+"/owner-code/verify", v, url.Values{"owner_code": {c}})
		return resp.StatusCode, text(page)
	}
	if st, page := enter("12"); st != http.StatusBadRequest || !strings.Contains(page, "expected the 6 digits") {
		t.Fatalf("two digits: %d, not explained", st)
	}
	for left := 2; left >= 0; left-- {
		st, page := enter(wrong)
		if st != http.StatusConflict || !strings.Contains(page, fmt.Sprintf("does not match; %d entries left", left)) ||
			!strings.Contains(page, reasonTable[server.ReasonOwnerCodeMismatch]) {
			t.Fatalf("wrong entry with %d left: %d\n%s", left, st, page)
		}
	}
	if st, page := enter(code); st != http.StatusConflict || !strings.Contains(page, "is spent: send a new one") ||
		!strings.Contains(page, reasonTable[server.ReasonNoOwnerCode]) {
		t.Fatalf("the right code after three wrong entries: %d\n%s", st, page)
	}
	resp, page := r.do("POST", "/devices/"+id+"/issue", v, url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-32"}, "method": {"2"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(text(page), reasonTable[server.ReasonSupervisorRequired]) {
		t.Fatalf("an agent issuing after three misses: %d\n%s", resp.StatusCode, text(page))
	}
	r.send(id, v)
	code = smtptest.OwnerCode(r.deliver(addr, 2).Body())
	enter(fmt.Sprintf("%06d", (atoiDigits(code)+1)%1000000))
	enter(fmt.Sprintf("%06d", (atoiDigits(code)+2)%1000000))
	if st, page := enter(code); st != http.StatusTooManyRequests || !strings.Contains(page, "code entry refused: this device had 5 wrong") ||
		!strings.Contains(page, reasonTable[server.ReasonGuessesPerDevice]) {
		t.Fatalf("an entry after five misses: %d\n%s", st, page)
	}
	if resp, page := r.send(id, v); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(text(page), "sending a code refused") {
		t.Fatalf("sending after five misses: %d", resp.StatusCode)
	}
	evs, _, _ := r.svc.QueryAudit(context.Background(), server.Actor{Subject: "t", Role: server.RoleAuditor},
		server.AuditFilter{Actor: "alice", Action: server.ActionOwnerCodeCheck, Outcome: server.OutcomeRefused, Limit: 100})
	misses := 0
	for _, ev := range evs {
		if strings.HasPrefix(ev.Detail, "code_mismatch") && strings.HasPrefix(ev.ClientAddr, "console:") {
			misses++
		}
	}
	if misses != 5 {
		t.Fatalf("%d wrong entries audited from the console, want 5", misses)
	}
}

func atoiDigits(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestCodesMailedToOneOwnerAreLimited: no mail-bombing an owner through
// the console.
func TestCodesMailedToOneOwnerAreLimited(t *testing.T) {
	r := newMailRig(t)
	_, id := r.register(owner())
	v := r.signIn("alice", server.RoleAgent)
	for i := range server.DefaultVerifyLimits.SendsPerDevice {
		if resp, _ := r.send(id, v); resp.StatusCode != http.StatusOK {
			t.Fatalf("code %d: %d", i+1, resp.StatusCode)
		}
	}
	resp, page := r.send(id, v)
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(text(page), "codes were sent to this owner in the last") ||
		!strings.Contains(text(page), reasonTable[server.ReasonSendsPerDevice]) || !strings.Contains(page, `id="owner-code-error"`) {
		t.Fatalf("one code too many: %d\n%s", resp.StatusCode, text(page))
	}
}

// TestDeviceWithoutEmailOffersNoEmailRoute: a phone-only owner gets no
// code and no e-mail delivery, and a hand-made request for either is
// refused by the service with its reason.
func TestDeviceWithoutEmailOffersNoEmailRoute(t *testing.T) {
	r := newMailRig(t)
	serial, id := r.register("+44 20 7946 0958")
	v := r.signIn("alice", server.RoleAgent)
	_, page := r.do("GET", "/devices/"+id, v, nil)
	for _, s := range []string{`id="send-code-button"`, `id="delivery"`, `value="5"`, `id="deliveries"`} {
		if strings.Contains(page, s) {
			t.Errorf("a phone-only device's page has %s", s)
		}
	}
	resp, page := r.do("POST", "/devices/"+id+"/owner-code/send", v, url.Values{})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(text(page), reasonTable[server.ReasonNoEmailRegistered]) {
		t.Fatalf("a hand-made send: %d\n%s", resp.StatusCode, text(page))
	}
	resp, page = r.do("POST", "/devices/"+id+"/issue", v, url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-33"}, "method": {"2"}, "delivery": {"2"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(text(page), "no registered e-mail address: deliver the code by voice") {
		t.Fatalf("a hand-made e-mail delivery: %d\n%s", resp.StatusCode, text(page))
	}
	if resp, _ := r.do("GET", "/devices/"+id+"/owner-code/send", v, nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET of the send form: %d, want 405", resp.StatusCode)
	}
	if n := len(r.issuances(serial)); n != 0 {
		t.Fatalf("%d issuances, want none", n)
	}
}

// TestEmailMethodWithoutAReadBackCodeIsRefused: choosing the e-mail code
// method by hand, without a code read back, issues nothing.
func TestEmailMethodWithoutAReadBackCodeIsRefused(t *testing.T) {
	r := newMailRig(t)
	serial, id := r.register(owner())
	v := r.signIn("alice", server.RoleAgent)
	resp, page := r.do("POST", "/devices/"+id+"/issue", v, url.Values{"request_id": {server.NewUUID()}, "ticket": {"T-34"}, "method": {"5"}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(text(page), reasonTable[server.ReasonOwnerCodeNotVerified]) {
		t.Fatalf("the e-mail method without a code: %d\n%s", resp.StatusCode, text(page))
	}
	if n := len(r.issuances(serial)); n != 0 {
		t.Fatalf("%d issuances, want none", n)
	}
}

// TestFailedDeliveryShowsTheReasonWithTheAddressMasked: the SMTP server's
// refusal, which quotes the address, reaches the device page masked.
func TestFailedDeliveryShowsTheReasonWithTheAddressMasked(t *testing.T) {
	r := newMailRig(t)
	addr := owner()
	_, id := r.register(addr)
	r.smtp.Refuse(func(to []string) error {
		if len(to) > 0 && to[0] == addr {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + addr + ">: no such mailbox"}
		}
		return nil
	})
	v := r.signIn("alice", server.RoleAgent)
	r.send(id, v)
	if _, err := r.ob.Round(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, page := r.do("GET", "/devices/"+id, v, nil)
	row := regexp.MustCompile(`<tr id="mail-[^"]+">.*?</tr>`).FindString(page)
	if !strings.Contains(row, "mail-failed") || !strings.Contains(row, "no such mailbox") || !strings.Contains(row, server.MaskContact(addr)) {
		t.Fatalf("the failed delivery's row %q", text(row))
	}
	if strings.Contains(page, addr) {
		t.Fatal("the page shows the owner's address quoted in the SMTP reply")
	}
}

func TestReasonTableNamesTheEmailRoutesRefusals(t *testing.T) {
	for r, code := range map[server.Reason]server.Code{
		server.ReasonNoEmailRegistered: server.EPrecondition, server.ReasonSendsPerDevice: server.ELimit,
		server.ReasonSendsPerAgent: server.ELimit, server.ReasonNoOwnerCode: server.EPrecondition,
		server.ReasonOwnerCodeMismatch: server.EPrecondition, server.ReasonOwnerCodeNotVerified: server.EPrecondition,
		server.ReasonGuessesPerDevice: server.ELimit, server.ReasonGuessesPerAgent: server.ELimit,
		server.ReasonSupervisorRequired: server.EPermission,
	} {
		p := asProblem(&server.Error{Code: code, Reason: r, Message: "m"})
		if p.Next == "" || p.Next == statusTable[code].next || p.Status != statusTable[code].status {
			t.Errorf("%s: next %q status %d: want its own words and its code's status", r, p.Next, p.Status)
		}
	}
}

func TestSMTPReplyQuotingAnAddressIsMasked(t *testing.T) {
	for in, want := range map[string]string{
		"550 5.1.1 <jane.doe@example.com>: no such mailbox": "550 5.1.1 <j***@example.com>: no such mailbox",
		"452 4.2.2 mailbox of jane@example.com full, (x@y)": "452 4.2.2 mailbox of j***@example.com full, (x***@y)",
		"250 2.0.0 OK queued as 1234":                       "250 2.0.0 OK queued as 1234",
	} {
		if got := maskAddresses(in); got != want {
			t.Errorf("maskAddresses(%q) = %q, want %q", in, got, want)
		}
	}
}
