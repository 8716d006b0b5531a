package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/server"
)

// insertMailSQL writes an outbox message; the sender finds it by
// mail_outbox_due.
const insertMailSQL = `INSERT INTO mail_outbox (id, kind, serial, recipient, challenge_id, issuance_id, read_out, language, actor)
	VALUES ($1, $2, $3, $4, NULLIF($5, '')::uuid, NULLIF($6, '')::uuid, $7, $8, $9)`

func mailArgs(m *server.OutboxMessage) []any {
	return []any{m.ID, string(m.Kind), m.Serial, m.Recipient, m.OwnerCodeID, m.IssuanceID, m.VoiceShown, m.Language, m.Actor}
}

// insertMail writes m within tx.
func insertMail(ctx context.Context, tx execer, m *server.OutboxMessage) error {
	_, err := tx.Exec(ctx, insertMailSQL, mailArgs(m)...)
	return err
}

// queueOwnerRoute adds to an issuance's write batch what the e-mail
// route decided: the owner code it spends and the message delivering it.
func queueOwnerRoute(b *pgx.Batch, d server.IssueDecision) {
	if d.SpendOwnerCode != "" {
		// used_by IS NULL: a code is spent once (the device lock
		// serialises the issuances that could spend it).
		b.Queue(`UPDATE owner_challenges SET used_by = $2 WHERE id = $1 AND used_by IS NULL AND verified_at IS NOT NULL`,
			d.SpendOwnerCode, d.Issuance.ID)
	}
	if d.Mail != nil {
		b.Queue(insertMailSQL, mailArgs(d.Mail)...)
	}
}

const mailStatusColumns = `id::text, kind, serial, COALESCE(issuance_id::text, ''), recipient, state, attempts,
	created_at, next_attempt_at, finished_at, COALESCE(message_id, ''), COALESCE(last_reply, ''), read_out`

func scanMailStatus(row pgx.Row) (server.MailStatus, error) {
	var (
		m        server.MailStatus
		kind, st string
		fin      *time.Time
	)
	err := row.Scan(&m.ID, &kind, &m.Serial, &m.IssuanceID, &m.To, &st, &m.Attempts,
		&m.CreatedAt, &m.NextAttemptAt, &fin, &m.MessageID, &m.LastReply, &m.VoiceShown)
	m.Kind, m.State, m.To = server.MailKind(kind), server.MailState(st), server.MaskContact(m.To)
	if fin != nil {
		m.FinishedAt = fin.UTC()
	}
	m.CreatedAt, m.NextAttemptAt = m.CreatedAt.UTC(), m.NextAttemptAt.UTC()
	return m, err
}

// MailStatuses lists up to limit of a device's outbox messages, newest
// first, and records the reading (ActionMailStatus).
func (db *DB) MailStatuses(ctx context.Context, a server.Actor, s string, limit int) ([]server.MailStatus, error) {
	var out []server.MailStatus
	var refusal error
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		e := event(a, server.ActionMailStatus, server.OutcomeSuccess, s)
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM devices WHERE serial = $1)`, s).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			refusal, e.Outcome, e.Detail = deviceNotFound(s), server.OutcomeRefused, "not_found"
			return insertEvent(ctx, tx, e)
		}
		rows, err := tx.Query(ctx, `SELECT `+mailStatusColumns+` FROM mail_outbox WHERE serial = $1
			ORDER BY created_at DESC, id LIMIT $2`, s, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.MailStatus, error) { return scanMailStatus(r) })
		if err != nil {
			return err
		}
		e.Detail = "count=" + strconv.Itoa(len(out))
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return nil, translate(err, "listing deliveries")
	}
	return out, refusal
}

// IssuanceMail returns the outbox message delivering an issuance.
func (db *DB) IssuanceMail(ctx context.Context, issuanceID string) (server.MailStatus, bool, error) {
	m, err := scanMailStatus(db.pool.QueryRow(ctx, `SELECT `+mailStatusColumns+` FROM mail_outbox WHERE issuance_id = $1`, issuanceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return server.MailStatus{}, false, nil
	}
	if err != nil {
		return server.MailStatus{}, false, translate(err, "reading an issuance's delivery")
	}
	return m, true, nil
}

// claimMailSQL claims due queued messages: SKIP LOCKED gives concurrent
// claimers disjoint rows, and the UPDATE commits the claim (state
// sending, one more attempt) before anything is sent.
const claimMailSQL = `WITH due AS (
		SELECT id FROM mail_outbox WHERE state = 'queued' AND next_attempt_at <= clock_timestamp()
		ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
	)
	UPDATE mail_outbox o SET state = 'sending', attempts = o.attempts + 1, claimed_by = $1, claimed_at = clock_timestamp()
	FROM due WHERE o.id = due.id
	RETURNING o.id::text, o.kind, o.serial, o.recipient, COALESCE(o.challenge_id::text, ''), COALESCE(o.issuance_id::text, ''),
		o.read_out, o.language, o.actor, o.attempts`

// ClaimMail claims up to n due messages for claimer and returns them with
// what composing them needs (the owner code or the issuance, the model).
func (db *DB) ClaimMail(ctx context.Context, claimer string, n int) ([]server.ClaimedMail, error) {
	var out []server.ClaimedMail
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, claimMailSQL, claimer, n)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.ClaimedMail, error) {
			var c server.ClaimedMail
			m := &c.Message
			var kind string
			err := r.Scan(&m.ID, &kind, &m.Serial, &m.Recipient, &m.OwnerCodeID, &m.IssuanceID, &m.VoiceShown, &m.Language, &m.Actor, &c.Attempt)
			m.Kind = server.MailKind(kind)
			return c, err
		})
		if err != nil {
			return err
		}
		return loadClaimed(ctx, tx, out)
	})
	if err != nil {
		return nil, translate(err, "claiming mail")
	}
	return out, nil
}

// loadClaimed fills in what composing the claimed messages needs: three
// statements for the whole batch, not three per message.
func loadClaimed(ctx context.Context, tx pgx.Tx, out []server.ClaimedMail) error {
	if len(out) == 0 {
		return nil
	}
	serials, codes, issuances := make([]string, 0, len(out)), []string{}, []string{}
	for _, c := range out {
		serials = append(serials, c.Message.Serial)
		if c.Message.OwnerCodeID != "" {
			codes = append(codes, c.Message.OwnerCodeID)
		}
		if c.Message.IssuanceID != "" {
			issuances = append(issuances, c.Message.IssuanceID)
		}
	}
	models := map[string]string{}
	rows, err := tx.Query(ctx, `SELECT serial, model FROM devices WHERE serial = ANY($1)`, serials)
	if err != nil {
		return err
	}
	for rows.Next() {
		var sn, m string
		if err := rows.Scan(&sn, &m); err != nil {
			rows.Close()
			return err
		}
		models[sn] = m
	}
	if err := rows.Err(); err != nil {
		return err
	}
	ocs := map[string]*server.OwnerCode{}
	rows, err = tx.Query(ctx, `SELECT id::text, serial, actor, key_generation, created_at, expires_at, wrong_entries
		FROM owner_challenges WHERE id = ANY($1::uuid[])`, codes)
	if err != nil {
		return err
	}
	for rows.Next() {
		oc := &server.OwnerCode{}
		if err := rows.Scan(&oc.ID, &oc.Serial, &oc.Actor, &oc.KeyGeneration, &oc.CreatedAt, &oc.ExpiresAt, &oc.WrongEntries); err != nil {
			rows.Close()
			return err
		}
		ocs[oc.ID] = oc
	}
	if err := rows.Err(); err != nil {
		return err
	}
	iss := map[string]*server.Issuance{}
	rows, err = tx.Query(ctx, `SELECT `+issuanceColumns+` FROM issuances WHERE id = ANY($1::uuid[])`, issuances)
	if err != nil {
		return err
	}
	for rows.Next() {
		i, err := scanIssuance(rows)
		if err != nil {
			rows.Close()
			return err
		}
		iss[i.ID] = &i
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i := range out {
		c := &out[i]
		c.Model = models[c.Message.Serial]
		c.Code = ocs[c.Message.OwnerCodeID]
		c.Issuance = iss[c.Message.IssuanceID]
	}
	return nil
}

// mailEvent is the audit event of an outbox act by the mailer.
func mailEvent(m server.OutboxMessage, outcome server.Outcome, detail string) *server.AuditEvent {
	e := event(server.Actor{Subject: server.MailerActor, Role: server.RoleMailer}, server.ActionMailAttempt, outcome, m.Serial)
	e.IssuanceID, e.Detail = m.IssuanceID, detail
	return e
}

// FinishMail records each attempt's outcome and its audit event (the
// SMTP reply and the Message-ID), in one transaction, if the claim is
// still outs[i].Claimer's; a claim reaped meanwhile keeps its failed state
// and the attempt is audited as late.
func (db *DB) FinishMail(ctx context.Context, msgs []server.OutboxMessage, outs []server.MailOutcome) error {
	if len(msgs) != len(outs) {
		return server.Internal(fmt.Errorf("postgres: %d messages, %d outcomes", len(msgs), len(outs)), "recording mail attempts")
	}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for i, m := range msgs {
			out := outs[i]
			var next any
			if out.State == server.MailQueued {
				next = out.RetryAt
			}
			outcome := server.OutcomeSuccess
			if out.State != server.MailSent {
				outcome = server.OutcomeRefused
			}
			detail := fmt.Sprintf("mail=%s kind=%s attempt=%d state=%s message_id=%s reply=%q", m.ID, m.Kind, out.Attempt, out.State, out.MessageID, clip.Quote(out.Reply, 80))
			// The event says "late" when the claim was no longer this
			// sender's (the UPDATE matched nothing).
			b.Queue(`WITH u AS (
					UPDATE mail_outbox SET state = $4, message_id = NULLIF($5, ''), last_reply = $6,
						next_attempt_at = COALESCE($7::timestamptz, next_attempt_at),
						finished_at = CASE WHEN $4 IN ('sent', 'failed') THEN clock_timestamp() END
					WHERE id = $1 AND state = 'sending' AND claimed_by = $2 AND attempts = $3
					RETURNING 1
				)
				INSERT INTO audit_events (actor, role, action, outcome, serial, issuance_id, detail)
				SELECT $8, $9, $10, $11, $12, NULLIF($13, '')::uuid,
					CASE WHEN EXISTS (SELECT 1 FROM u) THEN $14 ELSE 'late ' || $14 END`,
				m.ID, out.Claimer, out.Attempt, string(out.State), out.MessageID, clip.Quote(out.Reply, 80), next,
				server.MailerActor, string(server.RoleMailer), string(server.ActionMailAttempt), string(outcome), m.Serial, m.IssuanceID, detail)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	return translate(err, "recording mail attempts")
}

// ReapMail fails the claims older than stale, whose sender stopped before
// recording the attempt: the message may have been delivered, so it is
// never sent again.
func (db *DB) ReapMail(ctx context.Context, stale time.Duration) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE mail_outbox SET state = 'failed', finished_at = clock_timestamp(),
				last_reply = 'delivery unknown, not retried: sender ' || claimed_by || ' stopped during attempt ' || attempts
			WHERE id IN (SELECT id FROM mail_outbox WHERE state = 'sending' AND claimed_at < clock_timestamp() - $1::interval
				FOR UPDATE SKIP LOCKED)
			RETURNING id::text, kind, serial, COALESCE(issuance_id::text, ''), claimed_by, attempts`, stale)
		if err != nil {
			return err
		}
		type reaped struct {
			m       server.OutboxMessage
			by      string
			attempt int
		}
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (reaped, error) {
			var x reaped
			var kind string
			err := r.Scan(&x.m.ID, &kind, &x.m.Serial, &x.m.IssuanceID, &x.by, &x.attempt)
			x.m.Kind = server.MailKind(kind)
			return x, err
		})
		if err != nil {
			return err
		}
		for _, x := range list {
			if err := insertEvent(ctx, tx, mailEvent(x.m, server.OutcomeRefused,
				fmt.Sprintf("reaped mail=%s kind=%s attempt=%d state=failed claimed_by=%s delivery=unknown", x.m.ID, x.m.Kind, x.attempt, x.by))); err != nil {
				return err
			}
		}
		n = len(list)
		return nil
	})
	return n, translate(err, "reaping stale mail claims")
}
