package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server"
)

// guessLockNamespace is the first key of the two-key advisory lock that
// serialises one staff member's owner guesses and code sends (the second
// is hashtext(actor)), so that their miss and send counts are exact
// across replicas. It differs from issueLockNamespace: a guess never
// waits for the same actor's issuance, and the lock order (actor, then
// device row) is the same in both, so they never deadlock.
const guessLockNamespace = 0x484d // "HM"

// missPredicate selects the audit events that are owner-guess misses: a
// refused owner check or code entry whose detail says it did not match
// (refusals that judged nothing, like a throttled guess, are not misses).
const missPredicate = `action IN ('device.owner_check', 'device.owner_code_check') AND outcome = 'refused'
	AND detail ~ '^(owner|code)_mismatch'`

// guessLockSQL and missesSQL lock an actor's guesses and count the misses
// on a device ($1) within $3 and by an actor ($2) within $4.
const (
	guessLockSQL = `SELECT pg_advisory_xact_lock($1, hashtext($2))`
	missesSQL    = `SELECT
		(SELECT count(*) FROM audit_events WHERE serial = $1 AND at > clock_timestamp() - $3::interval AND ` + missPredicate + `),
		(SELECT count(*) FROM audit_events WHERE actor = $2 AND at > clock_timestamp() - $4::interval AND ` + missPredicate + `)`
)

// lockGuess takes the actor's guess lock and the device row (FOR UPDATE),
// and counts the misses; registered is false when no device has serial s.
func lockGuess(ctx context.Context, tx pgx.Tx, a server.Actor, s string) (contact string, hold *server.Hold, registered bool, m server.Misses, err error) {
	if _, err = tx.Exec(ctx, guessLockSQL, guessLockNamespace, a.Subject); err != nil {
		return
	}
	var holdReason, holdBy *string
	var holdSince *time.Time
	err = tx.QueryRow(ctx, `SELECT owner_contact, hold_reason, hold_by, hold_since FROM devices WHERE serial = $1 FOR UPDATE`, s).
		Scan(&contact, &holdReason, &holdBy, &holdSince)
	switch {
	case err == pgx.ErrNoRows:
		err = nil
	case err != nil:
		return
	default:
		registered = true
	}
	hold = holdOf(holdReason, holdBy, holdSince)
	err = tx.QueryRow(ctx, missesSQL, s, a.Subject, server.MissWindow, server.AgentMissWindow).Scan(&m.Device, &m.Agent)
	return
}

// CheckOwner asks judge about the device's registered owner contact, which
// it never returns, with the device's and the actor's recent misses
// counted under their locks, and records the verdict: ActionOwnerCheck,
// refused with the verdict's detail on a mismatch or a refusal.
func (db *DB) CheckOwner(ctx context.Context, a server.Actor, s string, judge func(server.OwnerCheckFacts) server.OwnerVerdict) (bool, error) {
	var (
		match   bool
		refusal error
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		e := event(a, server.ActionOwnerCheck, server.OutcomeRefused, s)
		registered, _, ok, m, err := lockGuess(ctx, tx, a, s)
		switch {
		case err != nil:
			return err
		case !ok:
			refusal = deviceNotFound(s)
			e.Detail = "not_found"
		default:
			v := judge(server.OwnerCheckFacts{Registered: registered, Misses: m})
			match = v.Match && v.Refusal == nil
			switch {
			case v.Refusal != nil:
				refusal, e.Detail = v.Refusal, v.Detail
			case match:
				e.Outcome = server.OutcomeSuccess
			default:
				e.Detail = v.Detail
			}
		}
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return false, translate(err, "checking an owner")
	}
	return match, refusal
}

// SendOwnerCode reads the facts of a request to send an owner code under
// the actor's guess lock and the device row, asks decide, and writes the
// event and, unless refused, the code and its outbox message.
func (db *DB) SendOwnerCode(ctx context.Context, a server.Actor, s string,
	decide func(server.OwnerCodeSendFacts) server.OwnerCodeSendDecision) (server.OwnerCode, server.MailStatus, error) {
	var (
		code    server.OwnerCode
		status  server.MailStatus
		refusal error
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		contact, hold, ok, m, err := lockGuess(ctx, tx, a, s)
		if err != nil {
			return err
		}
		f := server.OwnerCodeSendFacts{Actor: a, Serial: s, Registered: ok, Hold: hold, Contact: contact, Misses: m}
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp(),
				(SELECT count(*) FROM owner_challenges WHERE serial = $1 AND created_at > clock_timestamp() - $3::interval),
				(SELECT count(*) FROM owner_challenges WHERE actor = $2 AND created_at > clock_timestamp() - $3::interval)`,
			s, a.Subject, server.SendWindow).Scan(&f.Now, &f.DeviceSends, &f.AgentSends); err != nil {
			return err
		}
		f.Now = f.Now.UTC().Truncate(time.Microsecond)
		d := decide(f)
		if d.Refusal != nil {
			refusal = d.Refusal
			return insertEvent(ctx, tx, &d.Event)
		}
		code = d.Code
		if _, err := tx.Exec(ctx, `INSERT INTO owner_challenges (id, serial, actor, key_generation, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, code.ID, code.Serial, code.Actor, code.KeyGeneration, code.CreatedAt, code.ExpiresAt); err != nil {
			return err
		}
		if err := insertMail(ctx, tx, &d.Mail); err != nil {
			return err
		}
		status = server.MailStatus{ID: d.Mail.ID, Kind: d.Mail.Kind, Serial: s, To: server.MaskContact(d.Mail.Recipient),
			State: server.MailQueued, CreatedAt: f.Now, NextAttemptAt: f.Now}
		return insertEvent(ctx, tx, &d.Event)
	})
	if err != nil {
		return server.OwnerCode{}, server.MailStatus{}, translate(err, "sending an owner code")
	}
	return code, status, refusal
}

// CheckOwnerCode reads the actor's newest live code for the device under
// the actor's guess lock and the device row, asks judge, and writes the
// event and the code's verification or wrong entry.
func (db *DB) CheckOwnerCode(ctx context.Context, a server.Actor, s string,
	judge func(server.OwnerCodeCheckFacts) (server.OwnerCodeVerdict, error)) error {
	var refusal error
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		_, _, ok, m, err := lockGuess(ctx, tx, a, s)
		if err != nil {
			return err
		}
		f := server.OwnerCodeCheckFacts{Actor: a, Serial: s, Registered: ok, Misses: m}
		var c server.OwnerCode
		err = tx.QueryRow(ctx, `SELECT clock_timestamp(), id::text, serial, actor, key_generation, created_at, expires_at, wrong_entries
			FROM owner_challenges WHERE serial = $1 AND actor = $2 AND verified_at IS NULL AND expires_at > clock_timestamp()
			ORDER BY created_at DESC LIMIT 1`, s, a.Subject).
			Scan(&f.Now, &c.ID, &c.Serial, &c.Actor, &c.KeyGeneration, &c.CreatedAt, &c.ExpiresAt, &c.WrongEntries)
		switch {
		case err == pgx.ErrNoRows:
		case err != nil:
			return err
		default:
			f.Code = &c
		}
		v, err := judge(f)
		if err != nil {
			return err
		}
		if v.Refusal != nil {
			refusal = v.Refusal
		}
		if f.Code != nil {
			switch {
			case v.Match:
				_, err = tx.Exec(ctx, `UPDATE owner_challenges SET verified_at = clock_timestamp() WHERE id = $1`, c.ID)
			case v.Refusal != nil && v.Refusal.Reason == server.ReasonOwnerCodeMismatch:
				_, err = tx.Exec(ctx, `UPDATE owner_challenges SET wrong_entries = wrong_entries + 1 WHERE id = $1`, c.ID)
			}
			if err != nil {
				return err
			}
		}
		return insertEvent(ctx, tx, &v.Event)
	})
	if err != nil {
		return translate(err, "checking an owner code")
	}
	return refusal
}
