package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// issueLockNamespace is the first key of the two-key advisory lock that
// serialises one staff member's issuances (the second key is
// hashtext(actor)). Two-key locks never collide with one-key locks (goose's
// migration lock, the audit sealer's).
const issueLockNamespace = 0x484c // "HL"

// The statements of the issue transaction, in order. bench/issue.sql runs
// the same statements under pgbench; keep the two in step.
const (
	// 1. Serialise this actor's issuances: the idempotency lookup and the
	// per-agent count below are then exact across replicas.
	issueLockActorSQL = `SELECT pg_advisory_xact_lock($1, hashtext($2))`
	// 2. Idempotency: a retried request id returns the first answer.
	issueExistingSQL = `SELECT ` + issuanceColumns + ` FROM issuances WHERE actor = $1 AND request_id = $2`
	// 3. Serialise this device's issuances and read its state.
	issueLockDeviceSQL = `SELECT hold_reason, hold_by, hold_since, last_sequence, last_issued_at, key_generation, owner_contact
		FROM devices WHERE serial = $1 FOR UPDATE`
	// 4. The issue time and the limit counts. A statement of its own, after
	// both locks, so that its snapshot sees every issuance committed before
	// them. The time is read under the device lock and never precedes the
	// device's previous issuance: issue times follow sequence numbers. The
	// last column says whether this actor's owner check of this device
	// succeeded within the hour: an issuance claiming OWNER_CONTACT_MATCHED
	// without one is flagged for auditors ("owner_check=none"). The
	// last is when the device's owner contact last changed.
	issueCountsSQL = `WITH t AS (
			SELECT greatest(clock_timestamp(), (SELECT last_issued_at FROM devices WHERE serial = $1)) AS now
		)
		SELECT t.now,
			(SELECT count(*) FROM issuances WHERE serial = $1 AND issued_at > t.now - $2::interval),
			(SELECT count(*) FROM issuances WHERE actor = $3 AND issued_at > t.now - $4::interval),
			EXISTS (SELECT 1 FROM audit_events WHERE serial = $1 AND at > t.now - interval '1 hour'
				AND actor = $3 AND action = 'device.owner_check' AND outcome = 'success'),
			(SELECT count(*) FROM audit_events WHERE serial = $1 AND ` + missPredicate + `
				AND at > greatest(t.now - $5::interval, (SELECT last_issued_at FROM devices WHERE serial = $1))),
			(SELECT id::text FROM owner_challenges WHERE serial = $1 AND actor = $3 AND verified_at IS NOT NULL
				AND used_by IS NULL ORDER BY verified_at DESC LIMIT 1),
			(SELECT max(verified_at) FROM owner_challenges WHERE serial = $1 AND actor = $3 AND verified_at IS NOT NULL
				AND used_by IS NULL),
			(SELECT at FROM audit_events WHERE serial = $1 AND action = 'device.contact_change' AND outcome = 'success'
				ORDER BY at DESC, id DESC LIMIT 1)
		FROM t`
	// 5. The sequence number.
	// (Go knows it from the locked read; bench/issue.sql RETURNs it.)
	issueBumpSQL = `UPDATE devices SET last_sequence = last_sequence + 1, last_issued_at = $2
		WHERE serial = $1`
	// 6. The issuance: the fields the code was made from, never the code.
	issueInsertSQL = `INSERT INTO issuances (id, request_id, serial, sequence, key_generation, signing_kid,
			issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason, request_nonce, proof)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`
	// 7. Its audit event: insertEventSQL.
)

// issueOnce runs the issuance transaction for req by a, counting in lim's
// windows (zero fields take server.DefaultLimits'): it takes the actor's and
// the device's locks, reads the server.IssueFacts, asks decide, and writes
// what it decided in the same transaction (the event alone for a refusal or
// a replay; the sequence bump, the issuance and its event otherwise).
// Whether the request is allowed is decide's to say, never the store's.
func (db *DB) issueOnce(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits,
	decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
	if decide == nil {
		return server.Issuance{}, server.Internal(errors.New("postgres: Issue without decide"), "issuing")
	}
	lim = lim.WithDefaults()

	var (
		out     server.Issuance
		refusal *server.Error
	)
	// The transaction is opened by the first batch and committed by the
	// second, so that a successful issue costs two round trips instead of
	// four (BEGIN and COMMIT would otherwise be round trips of their own).
	pc, err := db.pool.Acquire(ctx)
	if err != nil {
		return server.Issuance{}, translate(err, "issuing a temporary password")
	}
	// A connection released inside a transaction (after a failed ROLLBACK)
	// is closed by the pool, never reused half-way.
	defer pc.Release()
	tx := pc.Conn()
	committed := false
	body := func() error {
		f, err := readIssueFacts(ctx, tx, a, req, lim)
		if err != nil {
			return err
		}
		d, err := decide(f)
		if err != nil {
			return err
		}
		switch {
		case d.Refusal != nil:
			refusal = d.Refusal
			return insertEvent(ctx, tx, &d.Event)
		case d.Replay:
			if f.Existing == nil {
				return errors.New("postgres: a replay decided without an earlier issuance")
			}
			out = *f.Existing
			return insertEvent(ctx, tx, &d.Event)
		}
		iss := d.Issuance
		if iss.Serial != req.Serial || iss.RequestID != req.RequestID || iss.Sequence != f.LastSequence+1 ||
			!iss.IssuedAt.Equal(f.Now) || iss.ID == "" || iss.SigningKeyID == "" || iss.KeyGeneration < 1 || iss.ExpiresAt.IsZero() {
			return fmt.Errorf("postgres: decided issuance %+v does not fit the facts (serial %s, sequence %d, time %s)",
				iss, req.Serial, f.LastSequence+1, f.Now)
		}
		iss.ExpiresAt = iss.ExpiresAt.UTC().Truncate(time.Microsecond)
		b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 6)} // bump, insert, event, the owner route's, COMMIT
		b.Queue(issueBumpSQL, iss.Serial, iss.IssuedAt)
		b.Queue(issueInsertSQL, iss.ID, iss.RequestID, iss.Serial, iss.Sequence, iss.KeyGeneration, iss.SigningKeyID,
			iss.IssuedAt, iss.ExpiresAt, iss.Actor, string(iss.ActorRole), iss.Ticket, int16(iss.Method), iss.MethodNote, iss.OverrideReason,
			requestNonce(iss.RequestCode), iss.MAC[:])
		b.Queue(insertEventSQL, eventArgs(&d.Event)...)
		queueOwnerRoute(b, d)
		b.Queue("COMMIT")
		br := tx.SendBatch(ctx, b)
		// The bump makes last_sequence the decided sequence under the row
		// lock; were it ever another, the insert's UNIQUE (serial,
		// sequence) aborts the pipeline before COMMIT.
		for range b.Len() { // bump, insert, event, the owner route's, COMMIT
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		committed = true
		out = iss
		return nil
	}
	err = body()
	if err == nil && !committed {
		// A refusal's event, or a replay's: commit it.
		_, err = tx.Exec(ctx, "COMMIT")
		committed = err == nil
	}
	if !committed && tx.PgConn().TxStatus() != 'I' {
		// Roll back even when ctx is done, so the connection is clean.
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, rerr := tx.Exec(rctx, "ROLLBACK"); rerr != nil {
			tx.PgConn().Close(rctx) // the pool then discards it
		}
		cancel()
	}
	if err != nil {
		return server.Issuance{}, translate(err, "issuing a temporary password")
	}
	if refusal != nil {
		return server.Issuance{}, refusal
	}
	return out, nil
}

// readIssueFacts opens the transaction and runs statements 1 to 4 in one
// round trip; each runs after the one before it, with its own snapshot
// (read committed).
func readIssueFacts(ctx context.Context, tx *pgx.Conn, a server.Actor, req server.IssueRequest, lim server.Limits) (server.IssueFacts, error) {
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, 5)}
	b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
	b.Queue(issueLockActorSQL, issueLockNamespace, a.Subject)
	b.Queue(issueExistingSQL, a.Subject, req.RequestID)
	b.Queue(issueLockDeviceSQL, req.Serial)
	b.Queue(issueCountsSQL, req.Serial, lim.PerDeviceWindow, a.Subject, lim.PerAgentWindow, server.MissWindow)
	br := tx.SendBatch(ctx, b)
	for range 2 { // BEGIN, the actor lock
		if _, err := br.Exec(); err != nil {
			br.Close()
			return server.IssueFacts{}, err
		}
	}
	f := server.IssueFacts{Actor: a, Request: req, Limits: lim}
	existing, existErr := scanIssuance(br.QueryRow())
	var (
		holdReason, holdBy *string
		holdSince, lastAt  *time.Time
	)
	devErr := br.QueryRow().Scan(&holdReason, &holdBy, &holdSince, &f.LastSequence, &lastAt, &f.KeyGeneration, &f.OwnerContact)
	var codeID *string
	var codeAt, contactAt *time.Time
	cntErr := br.QueryRow().Scan(&f.Now, &f.DeviceCount, &f.AgentCount, &f.OwnerChecked, &f.OwnerMisses, &codeID, &codeAt, &contactAt)
	if codeID != nil && codeAt != nil {
		f.OwnerCodeID, f.OwnerCodeVerifiedAt = *codeID, codeAt.UTC()
	}
	if err := br.Close(); err != nil {
		return server.IssueFacts{}, err
	}
	for _, err := range []error{existErr, devErr, cntErr} {
		if err != nil && err != pgx.ErrNoRows {
			return server.IssueFacts{}, err
		}
	}
	if existErr == nil {
		f.Existing = &existing
	}
	f.Registered = devErr == nil
	f.Hold = holdOf(holdReason, holdBy, holdSince)
	if lastAt != nil {
		f.LastIssuedAt = lastAt.UTC()
	}
	if contactAt != nil {
		f.ContactChangedAt = contactAt.UTC()
	}
	f.Now = f.Now.UTC()
	f.InWindow = func(scope server.LimitScope, n int) (time.Time, error) {
		where, key, window := "serial", req.Serial, lim.PerDeviceWindow
		if scope == server.LimitPerAgent {
			where, key, window = "actor", a.Subject, lim.PerAgentWindow
		}
		var at time.Time
		err := tx.QueryRow(ctx, `SELECT issued_at FROM issuances WHERE `+where+` = $1
			AND issued_at > $2::timestamptz - $3::interval ORDER BY issued_at OFFSET $4 LIMIT 1`,
			key, f.Now, window, max(n, 0)).Scan(&at)
		if err == pgx.ErrNoRows {
			return time.Time{}, nil
		}
		return at.UTC(), err
	}
	return f, nil
}

// requestNonce is the nonce of a bound issuance's request code, or NULL.
func requestNonce(code string) *int64 {
	n, err := voicecode.ParseRequestCode(code)
	if code == "" || err != nil {
		return nil
	}
	v := int64(n)
	return &v
}
