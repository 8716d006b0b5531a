package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

var _ server.ApprovalStore = (*DB)(nil)

// approvalColumns are what scanApproval reads.
const approvalColumns = `id::text, requester, requester_role, request_id, serial, ticket, method, method_note, request_nonce,
	blocked, reason, state, created_at, expires_at, COALESCE(decided_by, ''), decided_at, COALESCE(comment, ''),
	COALESCE(issuance_id::text, '')`

// scanApproval reads approvalColumns, then extra (columns that follow).
func scanApproval(row pgx.Row, extra ...any) (server.Approval, error) {
	var (
		ap                   server.Approval
		role, blocked, state string
		method               int16
		decidedAt            *time.Time
		nonce                *int64
	)
	err := row.Scan(append([]any{&ap.ID, &ap.Requester, &role, &ap.Request.RequestID, &ap.Request.Serial, &ap.Request.Ticket, &method,
		&ap.Request.MethodNote, &nonce, &blocked, &ap.Reason, &state, &ap.CreatedAt, &ap.ExpiresAt,
		&ap.DecidedBy, &decidedAt, &ap.Comment, &ap.IssuanceID}, extra...)...)
	ap.RequesterRole, ap.Request.Method, ap.Blocked, ap.State = server.Role(role), server.VerificationMethod(method), server.Reason(blocked), server.ApprovalState(state)
	ap.CreatedAt, ap.ExpiresAt = ap.CreatedAt.UTC(), ap.ExpiresAt.UTC()
	if decidedAt != nil {
		ap.DecidedAt = decidedAt.UTC()
	}
	if nonce != nil {
		ap.Request.RequestCode = voicecode.FormatRequestCode(uint64(*nonce))
	}
	return ap, err
}

// CreateApproval stores a pending approval and its event in one
// transaction; a second request for the same requester and request id
// returns the first.
func (db *DB) CreateApproval(ctx context.Context, ap server.Approval, ttl time.Duration, ev server.AuditEvent) (server.Approval, bool, error) {
	var (
		out   server.Approval
		first bool
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM devices WHERE serial = $1)`, ap.Request.Serial).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return deviceNotFound(ap.Request.Serial)
		}
		r := ap.Request
		tag, err := tx.Exec(ctx, `INSERT INTO approvals (id, requester, requester_role, request_id, serial, ticket, method, method_note,
			request_nonce, blocked, reason, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now() + $12::interval)
			ON CONFLICT (requester, request_id) DO NOTHING`,
			ap.ID, ap.Requester, string(ap.RequesterRole), r.RequestID, r.Serial, r.Ticket, int16(r.Method), r.MethodNote,
			requestNonce(r.RequestCode), string(ap.Blocked), ap.Reason, ttl)
		if err != nil {
			return err
		}
		if first = tag.RowsAffected() == 1; first {
			if err := insertEvent(ctx, tx, &ev); err != nil {
				return err
			}
		}
		out, err = scanApproval(tx.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE requester = $1 AND request_id = $2`,
			ap.Requester, r.RequestID))
		return err
	})
	if err != nil {
		return server.Approval{}, false, translate(err, "storing a request for approval")
	}
	return out, first, nil
}

// Approval returns the approval id (ENotFound when none).
func (db *DB) Approval(ctx context.Context, id string) (server.Approval, error) {
	ap, err := scanApproval(db.pool.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id))
	return ap, translate(err, "reading a request for approval")
}

// PendingApprovals lists the pending approvals, oldest first.
func (db *DB) PendingApprovals(ctx context.Context, limit int) ([]server.Approval, error) {
	rows, err := db.pool.Query(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE state = 'pending'
		ORDER BY created_at, id LIMIT $1`, limit)
	if err != nil {
		return nil, translate(err, "listing requests for approval")
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.Approval, error) { return scanApproval(r) })
	return out, translate(err, "listing requests for approval")
}

// writeDecision writes d about the approval id (read at now) within tx.
func writeDecision(ctx context.Context, tx pgx.Tx, id string, d server.ApprovalDecision, now time.Time) error {
	for i := range d.Events {
		if err := insertEvent(ctx, tx, &d.Events[i]); err != nil {
			return err
		}
	}
	if d.State == "" {
		return nil
	}
	var err error
	if d.DecidedBy != "" {
		_, err = tx.Exec(ctx, `UPDATE approvals SET state = $2, decided_by = $3, decided_at = $4, comment = $5 WHERE id = $1`,
			id, string(d.State), d.DecidedBy, now, d.Comment)
	} else {
		_, err = tx.Exec(ctx, `UPDATE approvals SET state = $2 WHERE id = $1`, id, string(d.State))
	}
	return err
}

// DecideApproval locks the approval, lets decide answer it at the
// database clock, and writes the answer with its events.
func (db *DB) DecideApproval(ctx context.Context, id string, decide func(server.Approval, time.Time) server.ApprovalDecision) (server.Approval, server.ApprovalDecision, error) {
	var (
		ap server.Approval
		d  server.ApprovalDecision
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var now time.Time
		var err error
		row := tx.QueryRow(ctx, `SELECT `+approvalColumns+`, now() FROM approvals WHERE id = $1 FOR UPDATE`, id)
		if ap, err = scanApproval(row, &now); err != nil {
			return err
		}
		d = decide(ap, now.UTC())
		if err := writeDecision(ctx, tx, id, d, now); err != nil {
			return err
		}
		ap, err = scanApproval(tx.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id))
		return err
	})
	if err != nil {
		return server.Approval{}, server.ApprovalDecision{}, translate(err, "answering a request for approval")
	}
	return ap, d, nil
}

// ExpireApprovals expires the pending approvals whose time is up, as
// decide says, skipping rows another transaction is answering.
func (db *DB) ExpireApprovals(ctx context.Context, decide func(server.Approval, time.Time) (server.ApprovalDecision, bool)) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+approvalColumns+`, now() FROM approvals
			WHERE state = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT 100 FOR UPDATE SKIP LOCKED`)
		if err != nil {
			return err
		}
		type due struct {
			ap  server.Approval
			now time.Time
		}
		var todo []due
		for rows.Next() {
			var x due
			if x.ap, err = scanApproval(rows, &x.now); err != nil {
				rows.Close()
				return err
			}
			todo = append(todo, x)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, x := range todo {
			if d, ok := decide(x.ap, x.now.UTC()); ok {
				if err := writeDecision(ctx, tx, x.ap.ID, d, x.now); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, translate(err, "expiring requests for approval")
}

// LinkApprovalIssuance records the issuance a grant made; a link to
// another issuance, or to a request not granted, is refused.
func (db *DB) LinkApprovalIssuance(ctx context.Context, id, issuanceID string) error {
	tag, err := db.pool.Exec(ctx, `UPDATE approvals SET issuance_id = $2
		WHERE id = $1 AND state = 'granted' AND (issuance_id IS NULL OR issuance_id = $2::uuid)`, id, issuanceID)
	if err != nil {
		return translate(err, "linking an approval to its issuance")
	}
	if tag.RowsAffected() != 1 {
		return server.Internal(errors.New("approval not granted or linked to another issuance"), "linking an approval to its issuance")
	}
	return nil
}

// ApprovedIssuance reads the approval and its issuance, lets decide say
// whether the caller may see it, and writes decide's event.
func (db *DB) ApprovedIssuance(ctx context.Context, id string, decide func(server.RevealFacts) (server.AuditEvent, *server.Error)) (server.Issuance, error) {
	var (
		out     server.Issuance
		refusal *server.Error
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		ap, err := scanApproval(tx.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = $1`, id))
		if err != nil {
			return err
		}
		f := server.RevealFacts{Approval: ap}
		if ap.IssuanceID != "" {
			x, err := scanIssuance(tx.QueryRow(ctx, `SELECT `+issuanceColumns+` FROM issuances WHERE id = $1`, ap.IssuanceID))
			if err != nil {
				return err
			}
			f.Issuance = &x
		}
		var holdReason, holdBy *string
		var holdSince *time.Time
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp(), d.hold_reason, d.hold_by, d.hold_since FROM devices d WHERE d.serial = $1`,
			ap.Request.Serial).Scan(&f.Now, &holdReason, &holdBy, &holdSince); err != nil && err != pgx.ErrNoRows {
			return err
		}
		f.Hold = holdOf(holdReason, holdBy, holdSince)
		f.Now = f.Now.UTC()
		ev, r := decide(f)
		if err := insertEvent(ctx, tx, &ev); err != nil {
			return err
		}
		if refusal = r; r == nil {
			out = *f.Issuance
		}
		return nil
	})
	if err != nil {
		return server.Issuance{}, translate(err, "reading an approved issuance")
	}
	if refusal != nil {
		return server.Issuance{}, refusal
	}
	return out, nil
}
