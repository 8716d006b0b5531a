package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// MailKind is what an outbox message carries. Stored: append only.
type MailKind string

// The kinds of mail the service sends.
const (
	// MailOwnerCode is a one-time code proving the caller reads the
	// registered address.
	MailOwnerCode MailKind = "owner_code"
	// MailIssuance is a temporary password (voice code and grant).
	MailIssuance MailKind = "issuance"
)

// MailState is an outbox message's delivery state. Stored: append only.
type MailState string

// The delivery states. Sent and failed are final.
const (
	// MailQueued waits for a sender (again, after a temporary failure).
	MailQueued MailState = "queued"
	// MailSending is claimed by one sender, committed before the SMTP
	// conversation starts; a sender that stops here leaves it for the
	// reaper, which fails it (delivery unknown) rather than send twice.
	MailSending MailState = "sending"
	// MailSent was accepted by the SMTP server.
	MailSent MailState = "sent"
	// MailFailed was given up: refused permanently, out of attempts, or
	// unknown after a sender stopped mid-send.
	MailFailed MailState = "failed"
)

// Delivery is how a temporary password reaches the caller. The values
// cross the wire: append only.
type Delivery int

// The deliveries.
const (
	// DeliveryVoice: the agent reads the code out (the default).
	DeliveryVoice Delivery = 0
	// DeliveryEmail: mailed to the registered address only; the agent
	// never sees the code.
	DeliveryEmail Delivery = 2
	// DeliveryVoiceAndEmail: read out and mailed.
	DeliveryVoiceAndEmail Delivery = 3
)

// deliveryVoiceExplicit is the wire's DELIVERY_VOICE, the same as the
// default.
const deliveryVoiceExplicit Delivery = 1

// Emails reports whether d mails the code.
func (d Delivery) Emails() bool { return d == DeliveryEmail || d == DeliveryVoiceAndEmail }

// OutboxMessage is a message to send, as written in the transaction of
// the act that sends it. It holds no secret: the sender re-derives the
// code from the owner code or the issuance it names.
type OutboxMessage struct {
	ID   string
	Kind MailKind
	// Serial is the device; Recipient its registered address at the act.
	Serial, Recipient string
	// OwnerCodeID (MailOwnerCode) or IssuanceID (MailIssuance) names
	// what the message carries.
	OwnerCodeID, IssuanceID string
	// VoiceShown is whether the agent was also shown the voice code.
	VoiceShown bool
	// Language is the body's language ("en").
	Language string
	// Actor is the staff member whose act sends it.
	Actor string
}

// MailStatus is an outbox message's delivery state as staff see it: the
// address masked, never what it carries.
type MailStatus struct {
	ID         string
	Kind       MailKind
	Serial     string
	IssuanceID string
	// To is the recipient, masked.
	To       string
	State    MailState
	Attempts int
	// CreatedAt is when it was queued, NextAttemptAt when a queued one is
	// due, FinishedAt when it was sent or given up.
	CreatedAt, NextAttemptAt, FinishedAt time.Time
	// MessageID is the last attempt's Message-ID; LastReply the SMTP
	// server's last reply, or why it was given up.
	MessageID, LastReply string
	// VoiceShown is whether the agent was also shown the voice code.
	VoiceShown bool
}

// ClaimedMail is an outbox message a sender claimed, with what composing
// it needs.
type ClaimedMail struct {
	Message OutboxMessage
	// Attempt is this attempt's number (1 for the first).
	Attempt int
	// Model is the device's model code.
	Model string
	// Code is the owner code (MailOwnerCode).
	Code *OwnerCode
	// Issuance is the issuance (MailIssuance).
	Issuance *Issuance
}

// MailOutcome is what one attempt came to, for Store.FinishMail.
type MailOutcome struct {
	// State is MailSent, MailQueued (retry at RetryAt) or MailFailed.
	State   MailState
	RetryAt time.Time
	// MessageID and Reply are the attempt's Message-ID and the SMTP
	// server's reply (or the error).
	MessageID, Reply string
	// Claimer and Attempt identify the claim being finished.
	Claimer string
	Attempt int
}

// Mail is one composed message for a Mailer.
type Mail struct {
	MessageID string
	To        string
	Subject   string
	// Body is plain text.
	Body string
}

// MailResult is what the SMTP server made of one Mail.
type MailResult struct {
	// Err is nil when the server accepted the message.
	Err error
	// Reply is the server's reply (acceptance or error).
	Reply string
	// Temporary is a 4xx reply, or a failure before the message was handed
	// over: the server did not take it and a retry sends it once.
	Temporary bool
	// Ambiguous is a failure after the message was handed over but
	// before the server's reply arrived: it may have been accepted, so it
	// is never retried.
	Ambiguous bool
}

// Mailer sends composed messages over SMTP (server/mail implements it).
type Mailer interface {
	// Send sends msgs over one connection and returns one result per
	// message, in order.
	Send(ctx context.Context, msgs []Mail) []MailResult
	// Domain is the sender address's domain, for Message-IDs.
	Domain() string
}

// MailerActor is the audit actor of the outbox's own acts (attempts,
// reaping); its role is RoleMailer, which no staff token carries.
const MailerActor = "hotline-mailer"

// RoleMailer is the audit role of MailerActor. It is not a staff role
// (Role.Valid is false): no token can carry it.
const RoleMailer Role = "mailer"

// Outbox sends the outbox's messages: every replica runs one. A round
// claims due messages (FOR UPDATE SKIP LOCKED, so two replicas never
// claim the same one), commits the claim, re-derives each message's code,
// sends them over one SMTP connection, and records each attempt. A
// message is handed to the SMTP server at most once per claim, and
// claimed again only after the server said it did not take it (a 4xx, or
// a failure before the message was handed over); a claim whose sender
// stopped is failed by the reaper, not retried, since the message may
// have gone out.
type Outbox struct {
	// Service derives codes and grants (its Store and Keyring).
	Service *Service
	// Mailer is the SMTP client.
	Mailer Mailer
	// Name identifies this sender in claims (host name and process id).
	Name string
	// Batch is how many messages one round claims (default 50).
	Batch int
	// MaxAttempts bounds the attempts of one message (default 6).
	MaxAttempts int
	// Backoff is the wait before attempt n+1 after attempt n failed
	// temporarily (default 30s doubling, at most 30 minutes).
	Backoff func(n int) time.Duration
	// StaleAfter is how long a claim may stay unfinished before the
	// reaper fails it (default 10 minutes, far above any SMTP timeout).
	StaleAfter time.Duration

	kickOnce sync.Once
	kick     chan struct{}
}

func (o *Outbox) kickCh() chan struct{} {
	o.kickOnce.Do(func() { o.kick = make(chan struct{}, 1) })
	return o.kick
}

// DefaultBackoff waits 30s, 1m, 2m... at most 30 minutes.
func DefaultBackoff(n int) time.Duration {
	d := 30 * time.Second
	for i := 1; i < n && d < 30*time.Minute; i++ {
		d *= 2
	}
	return min(d, 30*time.Minute)
}

func (o *Outbox) defaults() {
	if o.Batch <= 0 {
		o.Batch = 50
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 6
	}
	if o.Backoff == nil {
		o.Backoff = DefaultBackoff
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = 10 * time.Minute
	}
	if o.Name == "" {
		o.Name = "sender-" + NewUUID()[:8]
	}
}

// Kick wakes Run for a message just queued; a nil Outbox ignores it.
func (o *Outbox) Kick() {
	if o == nil {
		return
	}
	select {
	case o.kickCh() <- struct{}{}:
	default:
	}
}

// Run sends rounds until ctx ends: every poll, and at once after Kick.
func (o *Outbox) Run(ctx context.Context, poll time.Duration) {
	o.defaults()
	kick := o.kickCh()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for {
			n, err := o.Round(ctx)
			if err != nil && ctx.Err() == nil {
				o.Service.log().Error("mail round failed", "sender", o.Name, "err", err)
			}
			if n < o.Batch || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
	}
}

// Round reaps stale claims, claims up to Batch due messages, sends them
// and records each attempt. It returns how many it claimed.
func (o *Outbox) Round(ctx context.Context) (int, error) {
	o.defaults()
	st := o.Service.Store
	if _, err := st.ReapMail(ctx, o.StaleAfter); err != nil {
		return 0, err
	}
	claimed, err := st.ClaimMail(ctx, o.Name, o.Batch)
	if err != nil || len(claimed) == 0 {
		return 0, err
	}
	msgs := make([]Mail, 0, len(claimed))
	sendable := make([]int, 0, len(claimed))
	outcomes := make([]MailOutcome, len(claimed))
	for i, c := range claimed {
		outcomes[i] = MailOutcome{Claimer: o.Name, Attempt: c.Attempt,
			MessageID: fmt.Sprintf("<%s.%d@%s>", c.Message.ID, c.Attempt, o.Mailer.Domain())}
		m, err := o.Service.composeMail(c)
		if err != nil {
			// Nothing was sent: a message that cannot be composed (its key
			// retired, say) is given up, with why, and logged.
			o.Service.log().Error("composing a mail failed", "mail", c.Message.ID, "err", err)
			outcomes[i].State, outcomes[i].Reply = MailFailed, "not sent: "+err.Error()
			continue
		}
		m.MessageID = outcomes[i].MessageID
		msgs = append(msgs, m)
		sendable = append(sendable, i)
	}
	var results []MailResult
	if len(msgs) > 0 {
		results = o.Mailer.Send(ctx, msgs)
	}
	for j, i := range sendable {
		r := MailResult{Err: errors.New("no result from the mailer"), Ambiguous: true}
		if j < len(results) {
			r = results[j]
		}
		out := &outcomes[i]
		out.Reply = r.Reply
		switch {
		case r.Err == nil:
			out.State = MailSent
		case r.Ambiguous:
			out.State = MailFailed
			out.Reply = "delivery unknown, not retried: " + r.Reply
		case r.Temporary && claimed[i].Attempt < o.MaxAttempts:
			out.State, out.RetryAt = MailQueued, time.Now().Add(o.Backoff(claimed[i].Attempt))
		case r.Temporary:
			out.State = MailFailed
			out.Reply = fmt.Sprintf("given up after %d attempts: %s", claimed[i].Attempt, r.Reply)
		default:
			out.State = MailFailed
		}
	}
	// An SMTP reply may quote the recipient ("550 5.1.1 <jane@...>: no
	// such user", or the client library's "affected recipient(s)"): it is
	// stored and shown to staff masked, like every owner contact.
	for i := range outcomes {
		outcomes[i].Reply = maskRecipient(outcomes[i].Reply, claimed[i].Message.Recipient)
	}
	// Record even when ctx has ended: the attempts happened.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	msgsOf := make([]OutboxMessage, len(claimed))
	for i, c := range claimed {
		msgsOf[i] = c.Message
	}
	return len(claimed), st.FinishMail(rctx, msgsOf, outcomes)
}

// composeMail re-derives what a claimed message carries and writes it.
func (s *Service) composeMail(c ClaimedMail) (Mail, error) {
	m := Mail{To: c.Message.Recipient}
	switch c.Message.Kind {
	case MailOwnerCode:
		if c.Code == nil {
			return Mail{}, errors.New("owner code missing")
		}
		code, err := s.Keyring.OwnerCode(c.Code.KeyGeneration, c.Code.ID, c.Code.Serial)
		if err != nil {
			return Mail{}, err
		}
		m.Subject, m.Body = ownerCodeText(c, code)
	case MailIssuance:
		if c.Issuance == nil {
			return Mail{}, errors.New("issuance missing")
		}
		iss, err := s.mint(*c.Issuance)
		if err != nil {
			return Mail{}, err
		}
		m.Subject, m.Body = issuanceText(c, iss)
	default:
		return Mail{}, fmt.Errorf("unknown mail kind %q", c.Message.Kind)
	}
	return m, nil
}

// ownerCodeText is the subject and plain-text body of an owner code.
func ownerCodeText(c ClaimedMail, code string) (string, string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Hello,\n\nSomeone called our support hotline about your DVR %s (serial %s).\n\n", c.Model, c.Message.Serial)
	fmt.Fprintf(&b, "If that was you, read this code to the support agent:\n\n    %s %s\n\n", code[:3], code[3:])
	fmt.Fprintf(&b, "It is valid until %s UTC, for this call only.\n\n", c.Code.ExpiresAt.UTC().Format("2006-01-02 15:04"))
	b.WriteString("If you did not call us, do not give this code to anyone and ignore this message:\n" +
		"nothing changes on your DVR without it.\n\n-- DVR support hotline\n")
	return "Your DVR support verification code", b.String()
}

// issuanceText is the subject and plain-text body of a temporary password.
func issuanceText(c ClaimedMail, iss Issued) (string, string) {
	var b strings.Builder
	fmt.Fprintf(&b, "Hello,\n\nHere is the temporary password for your DVR %s (serial %s), as asked on support ticket %s.\n\n",
		c.Model, iss.Serial, iss.Ticket)
	fmt.Fprintf(&b, "Temporary password (type it on the DVR's login screen):\n\n    %s\n\nRead as: %s\n\n", iss.VoiceCode, iss.Phonetic)
	fmt.Fprintf(&b, "It expires at %s UTC and works once.\n\n", iss.ExpiresAt.UTC().Format("2006-01-02 15:04"))
	b.WriteString("If your DVR's login screen offers \"Paste grant\", you may paste this instead:\n\n")
	b.WriteString(iss.Grant + "\n\n")
	b.WriteString("After you log in, the DVR asks you for a new admin password:\n" +
		"  - 6 to 32 characters;\n" +
		"  - at least two kinds of: digits, lower-case letters, upper-case letters, special characters.\n" +
		"Keep it somewhere safe.\n\n" +
		"If you did not ask for this, call the support hotline: someone may be trying to get into your DVR.\n\n-- DVR support hotline\n")
	return "Your DVR temporary password", b.String()
}

// maskRecipient replaces every occurrence of the recipient's address in an
// SMTP reply, in any case, by MaskContact's form of it.
func maskRecipient(reply, recipient string) string {
	if recipient == "" {
		return reply
	}
	lower, want := strings.ToLower(reply), strings.ToLower(recipient)
	var b strings.Builder
	for {
		i := strings.Index(lower, want)
		if i < 0 {
			b.WriteString(reply)
			return b.String()
		}
		b.WriteString(reply[:i])
		b.WriteString(MaskContact(recipient))
		reply, lower = reply[i+len(want):], lower[i+len(want):]
	}
}
