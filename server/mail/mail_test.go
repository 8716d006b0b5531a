package mail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/quotedprintable"
	netmail "net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/keyring"
	"github.com/dvrhotline/hotline/server/mail"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

var testURL string

func TestMain(m *testing.M) {
	if os.Getenv("HOTLINE_TEST_SENDER") != "" {
		os.Exit(runSenderProcess())
	}
	pgtest.Main(m, "server_mail", &testURL, postgres.Migrate)
}

// rig is a service over the test database, a real keyring, a real SMTP
// server and an outbox sender, logging into a buffer.
type rig struct {
	t    testing.TB
	db   *postgres.DB
	kr   *keyring.Keyring
	svc  *server.Service
	smtp *smtpd
	box  *server.Outbox
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newRig(t testing.TB, implicitTLS bool) *rig {
	t.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, testURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	// The tests share one database: what earlier tests left queued is not
	// this test's to send.
	if _, err := db.Pool().Exec(ctx, `UPDATE mail_outbox SET state = 'failed', last_reply = 'left by an earlier test'
		WHERE state IN ('queued', 'sending')`); err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(t.TempDir(), "keyring")
	kr, err := keyring.Init(kdir)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, db: db, kr: kr, smtp: startSMTPD(t, implicitTLS), logs: &syncBuffer{}}
	r.svc = server.NewService(db, kr)
	r.svc.Logger = slog.New(slog.NewJSONHandler(r.logs, nil))
	// The tests share one database and staff names: each sets the
	// per-agent limits it tests.
	r.svc.Verify.SendsPerAgent, r.svc.Verify.AgentMisses = 1<<20, 1<<20
	r.box = &server.Outbox{Service: r.svc, Mailer: r.mailer(t), Name: "test-sender", Backoff: func(int) time.Duration { return 0 }}
	return r
}

func (r *rig) config() mail.Config {
	sec := mail.SecuritySTARTTLS
	return mail.Config{Addr: r.smtp.Addr, Security: sec, Username: r.smtp.User, Password: r.smtp.Pass,
		From: "DVR Support <support@hotline.test>", ReplyTo: "help@hotline.test", CAFile: r.smtp.CAFile, Timeout: 10 * time.Second}
}

func (r *rig) mailer(t testing.TB) *mail.Mailer {
	c := r.config()
	m, err := mail.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var (
	agent = server.Actor{Subject: "alice", Role: server.RoleAgent, ClientAddr: "127.0.0.1"}
	boss  = server.Actor{Subject: "sue", Role: server.RoleSupervisor, ClientAddr: "127.0.0.1"}
)

var serialN int

// device registers a DVR with owner contact and returns its serial.
func (r *rig) device(owner string) string {
	r.t.Helper()
	serialN++
	sn := fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%013d", time.Now().UnixNano()%1e13+int64(serialN))
	if _, err := r.svc.RegisterDevice(context.Background(), server.Actor{Subject: "factory", Role: server.RoleProvisioner},
		server.NewDevice{Serial: sn, Model: "WBXHD082S2T", Firmware: "V4.0.1", OwnerContact: owner}); err != nil {
		r.t.Fatal(err)
	}
	return sn
}

// round runs one sender round and fails the test on an error.
func (r *rig) round() int {
	r.t.Helper()
	n, err := r.box.Round(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return n
}

// body decodes a received message's plain-text body.
func body(t testing.TB, data string) string {
	t.Helper()
	m, err := netmail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var rd io.Reader = m.Body
	if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		rd = quotedprintable.NewReader(m.Body)
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

var (
	ownerCodeRE = regexp.MustCompile(`(?m)^    (\d{3}) (\d{3})$`)
	voiceCodeRE = regexp.MustCompile(`(?m)^    ([0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4})$`)
)

func reason(err error) server.Reason {
	var e *server.Error
	if errors.As(err, &e) {
		return e.ReasonOf()
	}
	return ""
}

// TestOwnerCodeRoundTripThenAnIssuanceByEmail is the e-mail route: a code
// to the registered address over STARTTLS with authentication, read back
// (a wrong entry first), an issuance with the owner-email-code method
// delivered by e-mail only (the agent's answer carries no code), the code
// in the message accepted by dvr-agent, and the verification spent.
func TestOwnerCodeRoundTripThenAnIssuanceByEmail(t *testing.T) {
	r := newRig(t, false)
	ctx := context.Background()
	sn := r.device("Jane.Owner@Example.com")

	sent, err := r.svc.SendOwnerCode(ctx, agent, sn)
	if err != nil {
		t.Fatal(err)
	}
	if sent.To != "j***@example.com" || sent.Mail.State != server.MailQueued {
		t.Fatalf("sent = %+v: want the masked address and a queued mail", sent)
	}
	if n := r.round(); n != 1 {
		t.Fatalf("round claimed %d, want 1", n)
	}
	msgs := r.smtp.messages()
	if len(msgs) != 1 || msgs[0].To[0] != "jane.owner@example.com" || msgs[0].From != "support@hotline.test" {
		t.Fatalf("messages = %+v", msgs)
	}
	for _, h := range []string{"Date", "Message-Id", "Reply-To", "Subject"} {
		if header(msgs[0].Data, h) == "" {
			t.Errorf("message has no %s header:\n%s", h, msgs[0].Data)
		}
	}
	mm := ownerCodeRE.FindStringSubmatch(body(t, msgs[0].Data))
	if mm == nil {
		t.Fatalf("no code in the message:\n%s", body(t, msgs[0].Data))
	}
	code := mm[1] + mm[2]

	// Issuing with the method before the code was entered is refused.
	if _, err := r.svc.Issue(ctx, agent, server.IssueRequest{RequestID: "r-early", Serial: sn, Ticket: "T-1",
		Method: server.VerifyOwnerEmailCode}); reason(err) != server.ReasonOwnerCodeNotVerified {
		t.Fatalf("issue before the code = %v, want %s", err, server.ReasonOwnerCodeNotVerified)
	}
	wrong := fmt.Sprintf("%06d", (atoi(code)+1)%1000000)
	if err := r.svc.VerifyOwnerCode(ctx, agent, sn, wrong); reason(err) != server.ReasonOwnerCodeMismatch {
		t.Fatalf("wrong code = %v, want %s", err, server.ReasonOwnerCodeMismatch)
	}
	// Another agent cannot use alice's code.
	if err := r.svc.VerifyOwnerCode(ctx, server.Actor{Subject: "bob", Role: server.RoleAgent}, sn, code); reason(err) != server.ReasonNoOwnerCode {
		t.Fatalf("bob entering alice's code = %v, want %s", err, server.ReasonNoOwnerCode)
	}
	if err := r.svc.VerifyOwnerCode(ctx, agent, sn, mm[1]+" "+mm[2]); err != nil {
		t.Fatalf("right code: %v", err)
	}

	out, err := r.svc.Issue(ctx, agent, server.IssueRequest{RequestID: "r-mail", Serial: sn, Ticket: "T-1",
		Method: server.VerifyOwnerEmailCode, Delivery: server.DeliveryEmail})
	if err != nil {
		t.Fatal(err)
	}
	if out.VoiceCode != "" || out.Grant != "" || out.Phonetic != "" || out.Mail == nil || out.Mail.To != "j***@example.com" {
		t.Fatalf("e-mail delivery showed the code or no delivery: %+v", out)
	}
	// A retry asking for voice does not reveal what was mailed.
	again, err := r.svc.Issue(ctx, agent, server.IssueRequest{RequestID: "r-mail", Serial: sn, Ticket: "T-1",
		Method: server.VerifyOwnerEmailCode, Delivery: server.DeliveryVoice})
	if err != nil || again.VoiceCode != "" || again.ID != out.ID {
		t.Fatalf("retry = %+v, %v: want the same issuance without its code", again, err)
	}
	// The verification was spent by that issuance.
	if _, err := r.svc.Issue(ctx, agent, server.IssueRequest{RequestID: "r-second", Serial: sn, Ticket: "T-1",
		Method: server.VerifyOwnerEmailCode}); reason(err) != server.ReasonOwnerCodeNotVerified {
		t.Fatalf("second issuance on one verification = %v, want %s", err, server.ReasonOwnerCodeNotVerified)
	}

	if n := r.round(); n != 1 {
		t.Fatalf("round claimed %d, want 1", n)
	}
	msgs = r.smtp.messages()
	text := body(t, msgs[1].Data)
	vm := voiceCodeRE.FindStringSubmatch(text)
	if vm == nil {
		t.Fatalf("no voice code in the message:\n%s", text)
	}
	for _, want := range []string{sn, "WBXHD082S2T", "T-1", "6 to 32 characters", "two kinds", "Read as: ", "expires at", "eyJ"} {
		if !strings.Contains(text, want) {
			t.Errorf("the message lacks %q:\n%s", want, text)
		}
	}
	st, err := r.svc.MailStatuses(ctx, agent, sn, 0)
	if err != nil || len(st) != 2 || st[0].State != server.MailSent || st[0].MessageID == "" || !strings.Contains(st[0].LastReply, "OK") {
		t.Fatalf("statuses = %+v, %v", st, err)
	}
	if !strings.Contains(msgs[1].Data, strings.Trim(st[0].MessageID, "<>")) {
		t.Errorf("the recorded Message-ID %s is not the message's", st[0].MessageID)
	}
	verifyOnDVRAgent(t, r.kr, sn, vm[1])
	assertNoCode(t, r, []string{code, vm[1], strings.ReplaceAll(vm[1], "-", "")})
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// verifyOnDVRAgent runs the real dvr-agent binary on the code, with the
// device's key file and the trust file as the factory flashes them.
func verifyOnDVRAgent(t *testing.T, kr *keyring.Keyring, sn, code string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "dvr-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/dvr-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build dvr-agent: %v\n%s", err, out)
	}
	k, err := kr.DeviceKey(sn, kr.CurrentGeneration())
	if err != nil {
		t.Fatal(err)
	}
	kf, err := voicecode.MarshalKeyFile(sn, k)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := kr.GrantJWKS()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"device.key": kf, "trust.jwks": trust} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "verify", "--serial", sn, "--key-file", filepath.Join(dir, "device.key"),
		"--trust", filepath.Join(dir, "trust.jwks"), "--state", filepath.Join(dir, "state"), code)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dvr-agent verify %s: %v\n%s", code, err, out)
	}
}

// assertNoCode greps the outbox, the owner codes, the audit log and the
// logs for every code that was sent.
func assertNoCode(t *testing.T, r *rig, codes []string) {
	t.Helper()
	ctx := context.Background()
	var dump strings.Builder
	for _, table := range []string{"mail_outbox", "owner_challenges", "audit_events", "issuances"} {
		rows, err := r.db.Pool().Query(ctx, `SELECT row_to_json(t)::text FROM `+table+` t`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			dump.WriteString(s + "\n")
		}
		rows.Close()
	}
	for _, c := range codes {
		if strings.Contains(dump.String(), c) {
			t.Errorf("code %s is in the database", c)
		}
		if strings.Contains(r.logs.String(), c) {
			t.Errorf("code %s is in the logs", c)
		}
	}
	if !strings.Contains(dump.String(), "mail.attempt") {
		t.Error("no mail.attempt event in the audit log")
	}
}
