package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

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
	issueLockDeviceSQL = `SELECT hold_reason, hold_by, hold_since, last_sequence, last_issued_at, key_generation
		FROM devices WHERE serial = $1 FOR UPDATE`
	// 4. The issue time and the limit counts. A statement of its own, after
	// both locks, so that its snapshot sees every issuance committed before
	// them. The time is read under the device lock and never precedes the
	// device's previous issuance: issue times follow sequence numbers. The
	// last column says whether this actor's owner check of this device
	// succeeded within the hour: an issuance claiming OWNER_CONTACT_MATCHED
	// without one is flagged for auditors ("owner_check=none").
	issueCountsSQL = `WITH t AS (
			SELECT greatest(clock_timestamp(), (SELECT last_issued_at FROM devices WHERE serial = $1)) AS now
		)
		SELECT t.now,
			(SELECT count(*) FROM issuances WHERE serial = $1 AND issued_at > t.now - $2::interval),
			(SELECT count(*) FROM issuances WHERE actor = $3 AND issued_at > t.now - $4::interval),
			EXISTS (SELECT 1 FROM audit_events WHERE serial = $1 AND at > t.now - interval '1 hour'
				AND actor = $3 AND action = 'device.owner_check' AND outcome = 'success')
		FROM t`
	// 5. The sequence number.
	// (Go knows it from the locked read; bench/issue.sql RETURNs it.)
	issueBumpSQL = `UPDATE devices SET last_sequence = last_sequence + 1, last_issued_at = $2
		WHERE serial = $1`
	// 6. The issuance: the fields the code was made from, never the code.
	issueInsertSQL = `INSERT INTO issuances (id, request_id, serial, sequence, key_generation, signing_kid,
			issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`
	// 7. Its audit event: insertEventSQL.
)

// slotSeconds is the voice code's time resolution.
const slotSeconds = 600

// Issue runs the issuance transaction for req by a, within lim (zero
// fields take server.DefaultLimits'):
//
//   - a request id a already used returns that issuance unchanged, with no
//     new event (EConflict if it was for another device);
//   - an unknown device is ENotFound, a device on hold EPrecondition;
//   - over the per-device or per-agent limit, only a supervisor giving an
//     OverrideReason may issue; anyone else gets ELimit with RetryAfter;
//   - otherwise the device's next sequence number is assigned, prepare
//     fills ID, KeyGeneration, SigningKeyID and ExpiresAt, and the issuance
//     and its success event are committed together.
//
// Refusals are audited and committed before the error is returned.
// Malformed requests (EInvalid) and roles that may not issue (EPermission)
// are refused before the transaction and not audited here: the service
// layer records those.
func (db *DB) Issue(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits,
	prepare func(*server.Issuance)) (server.Issuance, error) {
	if err := validateIssue(a, req); err != nil {
		return server.Issuance{}, err
	}
	if prepare == nil {
		return server.Issuance{}, server.Internal(errors.New("postgres: Issue without prepare"), "issuing")
	}
	lim = withDefaults(lim)

	var (
		out     server.Issuance
		refusal error
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
		e := event(a, server.ActionIssue, server.OutcomeRefused, req.Serial)
		e.Ticket, e.Method, e.Reason, e.RequestID = req.Ticket, req.Method, req.OverrideReason, req.RequestID
		refuse := func(err error, detail string) error {
			refusal, e.Detail = err, detail
			return insertEvent(ctx, tx, e)
		}

		// One round trip for statements 1 to 4; each runs after the one
		// before it, with its own snapshot (read committed).
		b := &pgx.Batch{}
		b.Queue("BEGIN ISOLATION LEVEL READ COMMITTED")
		b.Queue(issueLockActorSQL, issueLockNamespace, a.Subject)
		b.Queue(issueExistingSQL, a.Subject, req.RequestID)
		b.Queue(issueLockDeviceSQL, req.Serial)
		b.Queue(issueCountsSQL, req.Serial, lim.PerDeviceWindow, a.Subject, lim.PerAgentWindow)
		br := tx.SendBatch(ctx, b)
		for range 2 { // BEGIN, the actor lock
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
		}
		existing, existErr := scanIssuance(br.QueryRow())
		var (
			holdReason, holdBy *string
			holdSince, lastAt  *time.Time
			lastSeq            int64
			keyGen             int
		)
		devErr := br.QueryRow().Scan(&holdReason, &holdBy, &holdSince, &lastSeq, &lastAt, &keyGen)
		var (
			now          time.Time
			devN, agentN int
			ownerChecked bool
		)
		cntErr := br.QueryRow().Scan(&now, &devN, &agentN, &ownerChecked)
		if err := br.Close(); err != nil {
			return err
		}
		for _, err := range []error{existErr, devErr, cntErr} {
			if err != nil && err != pgx.ErrNoRows {
				return err
			}
		}

		if existErr == nil {
			if existing.Serial != req.Serial {
				return refuse(&server.Error{Code: server.EConflict, Field: "request_id",
					Message: "this request id was already used for another device; use a new request id"}, "request_id_reused")
			}
			// A retry returns the first answer, but never for a device put
			// on hold since: a stolen DVR gets no code, not even a repeat.
			if holdReason != nil {
				return refuse(server.Errorf(server.EPrecondition, "the device is on hold since %s (by %s): %s",
					holdSince.UTC().Format(time.DateOnly), *holdBy, *holdReason), "on_hold replay")
			}
			// Handing the code out again is an act of its own: audited.
			e.Action, e.Outcome, e.IssuanceID = server.ActionIssueReplay, server.OutcomeSuccess, existing.ID
			e.Detail = "replay seq=" + strconv.FormatInt(existing.Sequence, 10)
			if err := insertEvent(ctx, tx, e); err != nil {
				return err
			}
			out = existing
			return nil
		}
		if devErr == pgx.ErrNoRows {
			return refuse(&server.Error{Code: server.ENotFound, Field: "serial",
				Message: "no device is registered under " + clip(req.Serial)}, "not_found")
		}
		if holdReason != nil {
			return refuse(server.Errorf(server.EPrecondition, "the device is on hold since %s (by %s): %s",
				holdSince.UTC().Format(time.DateOnly), *holdBy, *holdReason), "on_hold")
		}

		now = now.UTC()
		limitDetail := ""
		if devN >= lim.PerDevice || agentN >= lim.PerAgent {
			name, n, max, window, where, key := "per-device", devN, lim.PerDevice, lim.PerDeviceWindow, "serial", req.Serial
			if devN < lim.PerDevice {
				name, n, max, window, where, key = "per-agent", agentN, lim.PerAgent, lim.PerAgentWindow, "actor", a.Subject
			}
			limitDetail = fmt.Sprintf("limit=%s count=%d/%d", name, n, max)
			if a.Role != server.RoleSupervisor || req.OverrideReason == "" {
				// The limit frees up when enough of the in-window issuances
				// have left the window to bring the count below max.
				var oldest time.Time
				err := tx.QueryRow(ctx, `SELECT issued_at FROM issuances WHERE `+where+` = $1
					AND issued_at > $2::timestamptz - $3::interval ORDER BY issued_at OFFSET $4 LIMIT 1`,
					key, now, window, n-max).Scan(&oldest)
				if err != nil && err != pgx.ErrNoRows {
					return err
				}
				msg := fmt.Sprintf("the %s limit of %d issuances per %s is reached", name, max, window)
				if a.Role == server.RoleSupervisor {
					msg += "; a supervisor may issue over it with an override reason"
				} else {
					msg += "; ask a supervisor to issue it with a reason"
				}
				return refuse(&server.Error{Code: server.ELimit, Limit: name, Message: msg,
					RetryAfter: oldest.Add(window).UTC()}, limitDetail)
			}
			limitDetail = "override " + limitDetail
		}

		// The voice code carries the issue time's 10-minute slot and only
		// the sequence number mod 256, and the device orders codes by
		// (slot, sequence mod 256). Within one slot a wrap from 255 to 0
		// would make the newer code look older, so the device would refuse
		// it as superseded; refuse here instead until the next slot starts.
		seq := lastSeq + 1
		if lastAt != nil && seq%256 == 0 && lastAt.Unix()/slotSeconds == now.Unix()/slotSeconds {
			next := time.Unix((now.Unix()/slotSeconds+1)*slotSeconds, 0).UTC()
			return refuse(&server.Error{Code: server.EUnavailable, RetryAfter: next,
				Message: "this device was issued many codes in the last minutes; retry after " + next.Format(time.TimeOnly) + " UTC"},
				"sequence_wrap seq="+strconv.FormatInt(seq, 10))
		}

		iss := server.Issuance{RequestID: req.RequestID, Serial: req.Serial, Sequence: seq, IssuedAt: now, KeyGeneration: keyGen}
		prepare(&iss)
		// The device's own generation, read under its lock, wins.
		iss.KeyGeneration = keyGen
		// The store's own choices are not prepare's to change.
		iss.RequestID, iss.Serial, iss.Sequence, iss.IssuedAt = req.RequestID, req.Serial, seq, now
		iss.Actor, iss.ActorRole = a.Subject, a.Role
		iss.Ticket, iss.Method, iss.MethodNote, iss.OverrideReason = req.Ticket, req.Method, req.MethodNote, req.OverrideReason
		if iss.ID == "" || iss.ExpiresAt.IsZero() || iss.SigningKeyID == "" || iss.KeyGeneration < 1 {
			return server.Internal(errors.New("postgres: prepare left ID, ExpiresAt, SigningKeyID or KeyGeneration unset"), "issuing")
		}
		iss.ExpiresAt = iss.ExpiresAt.UTC().Truncate(time.Microsecond)

		e.Outcome, e.IssuanceID = server.OutcomeSuccess, iss.ID
		e.Detail = joinDetail("seq="+strconv.FormatInt(seq, 10), limitDetail)
		if req.Method == server.VerifyOwnerContact && !ownerChecked {
			// The agent says the owner contact matched, but no owner check
			// of this device by them succeeded within the hour.
			e.Detail = joinDetail(e.Detail, "owner_check=none")
		}
		b = &pgx.Batch{}
		b.Queue(issueBumpSQL, req.Serial, now)
		b.Queue(issueInsertSQL, iss.ID, iss.RequestID, iss.Serial, iss.Sequence, iss.KeyGeneration, iss.SigningKeyID,
			iss.IssuedAt, iss.ExpiresAt, iss.Actor, string(iss.ActorRole), iss.Ticket, int16(iss.Method), iss.MethodNote, iss.OverrideReason)
		b.Queue(insertEventSQL, eventArgs(e)...)
		b.Queue("COMMIT")
		br = tx.SendBatch(ctx, b)
		// The bump makes last_sequence seq under the row lock; were it ever
		// another, the insert's UNIQUE (serial, sequence) aborts the
		// pipeline before COMMIT.
		for range 4 { // bump, insert, event, COMMIT
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
		// A refusal's event, or an idempotent retry's read: commit it.
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

func joinDetail(a, b string) string {
	if b == "" {
		return a
	}
	return a + " " + b
}

// validateIssue refuses what no transaction could accept.
func validateIssue(a server.Actor, req server.IssueRequest) error {
	switch {
	case a.Subject == "":
		return server.Errorf(server.EUnauthenticated, "issuing needs an authenticated staff member")
	case a.Role != server.RoleAgent && a.Role != server.RoleSupervisor:
		return server.Errorf(server.EPermission, "role %q may not issue temporary passwords", a.Role)
	case req.RequestID == "" || len(req.RequestID) > 128:
		return server.Invalid("request_id", "a request id of 1 to 128 characters is required (a UUID)")
	case req.Serial == "":
		return server.Invalid("serial", "a serial is required")
	case req.Ticket == "":
		return server.Invalid("ticket", "a support ticket reference is required")
	case req.Method < server.VerifyOwnerContact || req.Method > server.VerifyOther:
		return server.Invalid("method", "how the caller's ownership was checked is required")
	case req.Method == server.VerifyOther && req.MethodNote == "":
		return server.Invalid("method_note", "verification method \"other\" needs a note saying what was checked")
	}
	return nil
}

// withDefaults fills lim's zero (or negative) fields from server.DefaultLimits.
func withDefaults(lim server.Limits) server.Limits {
	d := server.DefaultLimits
	if lim.PerDevice <= 0 {
		lim.PerDevice = d.PerDevice
	}
	if lim.PerDeviceWindow <= 0 {
		lim.PerDeviceWindow = d.PerDeviceWindow
	}
	if lim.PerAgent <= 0 {
		lim.PerAgent = d.PerAgent
	}
	if lim.PerAgentWindow <= 0 {
		lim.PerAgentWindow = d.PerAgentWindow
	}
	return lim
}
