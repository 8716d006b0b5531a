package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvrhotline/hotline/server"
)

// insertEventSQL appends one audit event. Empty optional fields are stored
// as NULL so that "not given" is one thing.
const insertEventSQL = `INSERT INTO audit_events
	(actor, role, client_addr, action, outcome, serial, ticket, method, reason, request_id, issuance_id, detail)
VALUES ($1, $2, NULLIF($3, ''), $4, $5, NULLIF($6, ''), NULLIF($7, ''), NULLIF($8::smallint, 0),
	NULLIF($9, ''), NULLIF($10, ''), NULLIF($11, '')::uuid, NULLIF($12, ''))`

// eventArgs are insertEventSQL's arguments for e.
func eventArgs(e *server.AuditEvent) []any {
	return []any{e.Actor, string(e.Role), e.ClientAddr, string(e.Action), string(e.Outcome),
		e.Serial, e.Ticket, int16(e.Method), e.Reason, e.RequestID, e.IssuanceID, e.Detail}
}

// event starts an event for an act by a.
func event(a server.Actor, action server.Action, outcome server.Outcome, serial string) *server.AuditEvent {
	return &server.AuditEvent{Actor: a.Subject, Role: a.Role, ClientAddr: a.ClientAddr,
		Action: action, Outcome: outcome, Serial: serial}
}

// insertEvent appends e within tx.
// execer is what insertEvent needs: a pgx.Tx, or a *pgx.Conn inside an
// explicit transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insertEvent(ctx context.Context, tx execer, e *server.AuditEvent) error {
	_, err := tx.Exec(ctx, insertEventSQL, eventArgs(e)...)
	return err
}

// Audit records a standalone event: a refusal decided before the store was
// reached (permission denied, malformed request), in its own transaction.
// Time and ID are assigned by the database.
func (db *DB) Audit(ctx context.Context, e server.AuditEvent) error {
	if e.Action == "" {
		return server.Invalid("action", "an audit event needs an action")
	}
	if e.Outcome != server.OutcomeSuccess && e.Outcome != server.OutcomeRefused {
		return server.Invalid("outcome", "an audit event's outcome is %q or %q", server.OutcomeSuccess, server.OutcomeRefused)
	}
	_, err := db.pool.Exec(ctx, insertEventSQL, eventArgs(&e)...)
	return translate(err, "recording an audit event")
}

// The page sizes of QueryAudit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

const auditColumns = `id, at, actor, role, COALESCE(client_addr, ''), action, outcome,
	COALESCE(serial, ''), COALESCE(ticket, ''), COALESCE(method, 0), COALESCE(reason, ''),
	COALESCE(request_id, ''), COALESCE(issuance_id::text, ''), COALESCE(detail, '')`

// QueryAudit returns the events matching f, newest first by (time, id),
// one page of f.Limit. The next page is the events after the last one
// returned (f.AfterTime, f.AfterID). The query itself is audited
// (ActionAuditQuery) in the same transaction.
func (db *DB) QueryAudit(ctx context.Context, a server.Actor, f server.AuditFilter) ([]server.AuditEvent, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = defaultAuditLimit
	}
	if limit > maxAuditLimit {
		limit = maxAuditLimit
	}
	// The statement holds only the filters given, so each combination gets
	// a plan that uses the matching index; pgx caches each prepared form.
	var (
		where []string
		args  []any
		note  []string
	)
	add := func(cond string, v any, name string, shown string) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
		note = append(note, name+"="+shown)
	}
	if f.Serial != "" {
		add("serial = ?", f.Serial, "serial", f.Serial)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor, "actor", f.Actor)
	}
	if f.Action != "" {
		add("action = ?", string(f.Action), "action", string(f.Action))
	}
	if f.Outcome != "" {
		add("outcome = ?", string(f.Outcome), "outcome", string(f.Outcome))
	}
	if !f.From.IsZero() {
		add("at >= ?", f.From, "from", f.From.UTC().Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		add("at < ?", f.To, "to", f.To.UTC().Format(time.RFC3339Nano))
	}
	if !f.AfterTime.IsZero() || f.AfterID != 0 {
		args = append(args, f.AfterTime, f.AfterID)
		where = append(where, fmt.Sprintf("(at, id) < ($%d, $%d)", len(args)-1, len(args)))
		note = append(note, "after="+strconv.FormatInt(f.AfterID, 10))
	}
	q := "SELECT " + auditColumns + " FROM audit_events"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, limit)
	q += fmt.Sprintf(" ORDER BY at DESC, id DESC LIMIT $%d", len(args))

	var out []server.AuditEvent
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanEvent)
		if err != nil {
			return err
		}
		e := event(a, server.ActionAuditQuery, server.OutcomeSuccess, "")
		e.Detail = strings.Join(append(note, "n="+strconv.Itoa(len(out))), " ")
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return nil, translate(err, "querying the audit log")
	}
	return out, nil
}

func scanEvent(row pgx.CollectableRow) (server.AuditEvent, error) {
	var (
		e                     server.AuditEvent
		role, action, outcome string
		method                int16
	)
	err := row.Scan(&e.ID, &e.Time, &e.Actor, &role, &e.ClientAddr, &action, &outcome,
		&e.Serial, &e.Ticket, &method, &e.Reason, &e.RequestID, &e.IssuanceID, &e.Detail)
	e.Time = e.Time.UTC()
	e.Role, e.Action, e.Outcome, e.Method = server.Role(role), server.Action(action), server.Outcome(outcome), server.VerificationMethod(method)
	return e, err
}
