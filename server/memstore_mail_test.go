package server_test

// The in-memory Store's owner codes and outbox: what server/postgres's
// owner.go and outbox.go do, under the store's one lock, for testing the
// service's owner-verification and mail decisions without a database.

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// memOwnerCode is a row of owner_challenges.
type memOwnerCode struct {
	server.OwnerCode
	verifiedAt time.Time
	spent      bool
}

// memMail is a row of the outbox.
type memMail struct {
	msg     server.OutboxMessage
	status  server.MailStatus
	claimer string
	claimed time.Time
}

// isMiss is postgres's missPredicate: a refused guess that was judged.
func isMiss(e server.AuditEvent) bool {
	return (e.Action == server.ActionOwnerCheck || e.Action == server.ActionOwnerCodeCheck) &&
		e.Outcome == server.OutcomeRefused &&
		(strings.HasPrefix(e.Detail, "owner_mismatch") || strings.HasPrefix(e.Detail, "code_mismatch"))
}

// misses counts the device's and the actor's recent misses.
func (m *memStore) misses(a server.Actor, s string) server.Misses {
	now := m.clock.Now()
	var ms server.Misses
	for _, e := range m.events {
		if !isMiss(e) {
			continue
		}
		if e.Serial == s && e.Time.After(now.Add(-server.MissWindow)) {
			ms.Device++
		}
		if e.Actor == a.Subject && e.Time.After(now.Add(-server.AgentMissWindow)) {
			ms.Agent++
		}
	}
	return ms
}

// issueOwnerFacts fills the owner-verification facts of an issue request.
func (m *memStore) issueOwnerFacts(f *server.IssueFacts) {
	d := m.devices[f.Request.Serial]
	if d == nil {
		return
	}
	f.OwnerContact = d.OwnerContact
	for _, e := range m.events {
		if e.Serial == f.Request.Serial && isMiss(e) && e.Time.After(d.lastIssuedAt) && e.Time.After(f.Now.Add(-server.MissWindow)) {
			f.OwnerMisses++
		}
	}
	for i := len(m.codes) - 1; i >= 0; i-- {
		c := m.codes[i]
		if c.Serial == f.Request.Serial && c.Actor == f.Actor.Subject && !c.verifiedAt.IsZero() && !c.spent {
			f.OwnerCodeID, f.OwnerCodeVerifiedAt = c.ID, c.verifiedAt
			break
		}
	}
}

// spend applies an issuance decision's owner code and mail.
func (m *memStore) spend(d server.IssueDecision, iss server.Issuance) {
	for _, c := range m.codes {
		if d.SpendOwnerCode != "" && c.ID == d.SpendOwnerCode {
			c.spent = true
		}
	}
	if d.Mail != nil {
		m.queue(*d.Mail)
	}
}

// queue adds an outbox message.
func (m *memStore) queue(msg server.OutboxMessage) server.MailStatus {
	now := m.clock.Now()
	st := server.MailStatus{ID: msg.ID, Kind: msg.Kind, Serial: msg.Serial, IssuanceID: msg.IssuanceID,
		To: server.MaskContact(msg.Recipient), State: server.MailQueued, CreatedAt: now, NextAttemptAt: now, VoiceShown: msg.VoiceShown}
	m.mail = append(m.mail, &memMail{msg: msg, status: st})
	return st
}

// SendOwnerCode implements server.Store.
func (m *memStore) SendOwnerCode(ctx context.Context, a server.Actor, s string, decide func(server.OwnerCodeSendFacts) server.OwnerCodeSendDecision) (server.OwnerCode, server.MailStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	f := server.OwnerCodeSendFacts{Actor: a, Serial: s, Now: now, Misses: m.misses(a, s)}
	if d := m.devices[s]; d != nil {
		f.Registered, f.Hold, f.Contact = true, d.Hold, d.OwnerContact
	}
	for _, c := range m.codes {
		if c.CreatedAt.After(now.Add(-server.SendWindow)) {
			if c.Serial == s {
				f.DeviceSends++
			}
			if c.Actor == a.Subject {
				f.AgentSends++
			}
		}
	}
	d := decide(f)
	m.record(d.Event)
	if d.Refusal != nil {
		return server.OwnerCode{}, server.MailStatus{}, d.Refusal
	}
	m.codes = append(m.codes, &memOwnerCode{OwnerCode: d.Code})
	return d.Code, m.queue(d.Mail), nil
}

// CheckOwnerCode implements server.Store.
func (m *memStore) CheckOwnerCode(ctx context.Context, a server.Actor, s string, judge func(server.OwnerCodeCheckFacts) (server.OwnerCodeVerdict, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	f := server.OwnerCodeCheckFacts{Actor: a, Serial: s, Now: now, Registered: m.devices[s] != nil, Misses: m.misses(a, s)}
	var live *memOwnerCode
	for i := len(m.codes) - 1; i >= 0; i-- {
		c := m.codes[i]
		if c.Serial == s && c.Actor == a.Subject && c.verifiedAt.IsZero() && c.ExpiresAt.After(now) {
			live = c
			code := c.OwnerCode
			f.Code = &code
			break
		}
	}
	v, err := judge(f)
	if err != nil {
		return err
	}
	if live != nil {
		switch {
		case v.Match:
			live.verifiedAt = now
		case v.Refusal != nil && v.Refusal.Reason == server.ReasonOwnerCodeMismatch:
			live.WrongEntries++
		}
	}
	m.record(v.Event)
	if v.Refusal != nil {
		return v.Refusal
	}
	return nil
}

// MailStatuses implements server.Store.
func (m *memStore) MailStatuses(ctx context.Context, a server.Actor, s string, limit int) ([]server.MailStatus, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []server.MailStatus
	for i := len(m.mail) - 1; i >= 0 && len(out) < limit; i-- {
		if m.mail[i].msg.Serial == s {
			out = append(out, m.mail[i].status)
		}
	}
	m.record(event(a, server.ActionMailStatus, server.OutcomeSuccess, s))
	return out, nil
}

// IssuanceMail implements server.Store.
func (m *memStore) IssuanceMail(ctx context.Context, issuanceID string) (server.MailStatus, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ml := range m.mail {
		if ml.msg.IssuanceID == issuanceID {
			return ml.status, true, nil
		}
	}
	return server.MailStatus{}, false, nil
}

// ClaimMail implements server.Store.
func (m *memStore) ClaimMail(ctx context.Context, claimer string, n int) ([]server.ClaimedMail, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	var out []server.ClaimedMail
	for _, ml := range m.mail {
		if len(out) == n {
			break
		}
		if ml.status.State != server.MailQueued || ml.status.NextAttemptAt.After(now) {
			continue
		}
		ml.status.State, ml.claimer, ml.claimed = server.MailSending, claimer, now
		ml.status.Attempts++
		c := server.ClaimedMail{Message: ml.msg, Attempt: ml.status.Attempts}
		if d := m.devices[ml.msg.Serial]; d != nil {
			c.Model = d.Model
		}
		for _, oc := range m.codes {
			if oc.ID == ml.msg.OwnerCodeID {
				code := oc.OwnerCode
				c.Code = &code
			}
		}
		for i := range m.issuances {
			if m.issuances[i].ID == ml.msg.IssuanceID {
				iss := m.issuances[i]
				c.Issuance = &iss
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// FinishMail implements server.Store.
func (m *memStore) FinishMail(ctx context.Context, msgs []server.OutboxMessage, outs []server.MailOutcome) error {
	if len(msgs) != len(outs) {
		return errors.New("memstore: FinishMail with mismatched outcomes")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, msg := range msgs {
		for _, ml := range m.mail {
			if ml.msg.ID != msg.ID || ml.claimer != outs[i].Claimer || ml.status.State != server.MailSending {
				continue
			}
			o := outs[i]
			ml.status.State, ml.status.MessageID, ml.status.LastReply = o.State, o.MessageID, o.Reply
			if o.State == server.MailQueued {
				ml.status.NextAttemptAt = o.RetryAt
			} else {
				ml.status.FinishedAt = m.clock.Now()
			}
			e := server.AuditEvent{Actor: "mailer", Action: server.ActionMailAttempt, Outcome: server.OutcomeSuccess, Serial: msg.Serial, Detail: string(o.State)}
			if o.State != server.MailSent {
				e.Outcome = server.OutcomeRefused
			}
			m.record(e)
		}
	}
	return nil
}

// ReapMail implements server.Store.
func (m *memStore) ReapMail(ctx context.Context, stale time.Duration) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ml := range m.mail {
		if ml.status.State == server.MailSending && ml.claimed.Before(m.clock.Now().Add(-stale)) {
			ml.status.State, ml.status.FinishedAt = server.MailFailed, m.clock.Now()
			n++
		}
	}
	return n, nil
}
