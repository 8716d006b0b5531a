// Package postgres implements server.Store on PostgreSQL with pgx/v5.
//
// The schema is in migrations/ (embedded, applied by goose through
// Migrate); its invariants are database constraints, so every replica
// keeps them. Every act writes its audit event in the same transaction as
// the act; refusals the store decides itself (unknown device, hold, limit,
// sequence wrap, duplicate registration) are audited as "refused" events
// and committed before the *server.Error is returned. Refusals decided
// before the store is reached (permissions, malformed requests) are the
// service layer's to record, with DB.Audit.
//
// Errors are *server.Error: pgx.ErrNoRows is ENotFound, a unique violation
// EConflict (ReasonDeviceExists on a device's serial or id), a foreign-key
// or check violation EInvalid naming the field, a busy or unreachable
// database EUnavailable (ReasonDatabaseBusy), and anything else EInternal
// wrapping the cause.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
)

// DB is a pool of connections to the Hotline database. It implements
// server.Store and is safe for concurrent use; several DBs (replicas) over
// one database keep every invariant.
type DB struct {
	pool *pgxpool.Pool
	// exports holds a token per audit export streaming now: at most
	// cap(exports) of the pool's connections serve long streams, and the
	// rest are always there for the issue path.
	exports chan struct{}
}

// ExportConns is how many of a pool's connections audit exports may hold
// at once: a quarter, at least one. The others serve everything else.
func ExportConns(maxConns int32) int { return max(1, int(maxConns)/4) }

var _ server.Store = (*DB)(nil)

// Open connects to the database at databaseURL (a postgres:// URL or a
// keyword/value string, with pgxpool's pool_* settings) and checks that it
// answers. It does not migrate: call Migrate first.
func Open(ctx context.Context, databaseURL string) (*DB, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse database URL: %w", err)
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a pool configuration built by the caller.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*DB, error) {
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return &DB{pool: pool, exports: make(chan struct{}, ExportConns(cfg.MaxConns))}, nil
}

// Close closes every connection of the pool.
func (db *DB) Close() { db.pool.Close() }

// Pool returns the underlying pool, for health checks and metrics.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.pool.Ping(ctx) }

// fieldOf maps constraint names to the request field at fault and a
// sentence a support agent can act on. Constraints not listed here still
// translate, with a generic message.
var fieldOf = map[string]struct{ field, msg string }{
	"devices_pkey":                            {"serial", "a device with this serial is already registered"},
	"devices_device_id_key":                   {"serial", "a device with this device id is already registered"},
	"devices_model_fkey":                      {"model", "unknown model: expected one of the model catalogue, like WBXHD082S2T"},
	"devices_serial_format":                   {"serial", "expected a canonical serial like JZ6OES#2017-08-01#3#DVR1101134C08011"},
	"devices_device_id_matches":               {"device_id", "the device id must be the serial's last field"},
	"devices_production_date_matches":         {"production_date", "the production date must be the serial's date field"},
	"devices_key_generation_check":            {"key_generation", "the key generation must be at least 1"},
	"devices_hold_reason_check":               {"reason", "a hold needs a reason (reported stolen, disputed ownership, ...)"},
	"issuances_actor_request_id_key":          {"request_id", "this request id was already used"},
	"issuances_serial_fkey":                   {"serial", "no device with this serial"},
	"issuances_ticket_check":                  {"ticket", "a ticket reference is required"},
	"issuances_method_check":                  {"method", "the verification method must be one of the known methods"},
	"issuances_method_note_check":             {"method_note", "verification method \"other\" needs a note saying what was checked"},
	"issuances_request_id_check":              {"request_id", "a request id of 1 to 128 characters is required"},
	"issuances_expiry_check":                  {"expires_at", "a temporary password expires within 24 hours of issue"},
	"audit_events_action_check":               {"action", "the action must look like \"device.lookup\""},
	"audit_events_outcome_check":              {"outcome", "the outcome must be \"success\" or \"refused\""},
	"audit_events_method_check":               {"method", "the verification method must be one of the known methods"},
	"audit_events_issuance_id_fkey":           {"issuance_id", "no issuance with this id"},
	"audit_events_issue_success_has_issuance": {"issuance_id", "a successful issuance event needs its issuance id"},
}

// translate turns err into a *server.Error; what says what was being done,
// for EInternal. A *server.Error passes through unchanged.
func translate(err error, what string) error {
	if err == nil {
		return nil
	}
	var se *server.Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return &server.Error{Code: server.ENotFound, Message: "not found while " + what, Err: err}
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		if unreachable(err) {
			return busy(err, what)
		}
		return server.Internal(err, what)
	}
	f, known := fieldOf[pe.ConstraintName]
	switch pe.Code {
	case "23505": // unique_violation
		msg := "already exists"
		if known {
			msg = f.msg
		}
		return &server.Error{Code: server.EConflict, Reason: conflictReasons[pe.ConstraintName], Field: f.field, Message: msg, Err: err}
	case "23503", "23514", "23502": // foreign_key, check, not_null violation
		msg := fmt.Sprintf("the request breaks the rule %q while %s", pe.ConstraintName, what)
		if known {
			msg = f.msg
		} else if pe.Code == "23502" {
			msg = fmt.Sprintf("%s is required", pe.ColumnName)
			f.field = pe.ColumnName
		}
		return &server.Error{Code: server.EInvalid, Field: f.field, Message: msg, Err: err}
	case "22001", "22P02", "22007", "22008": // too long, bad text representation, bad date/time
		return &server.Error{Code: server.EInvalid, Message: "malformed value while " + what, Err: err}
	case "40001", "40P01", "55P03", // serialization failure, deadlock, lock not available
		"53300", "57P01", "57P03": // too many connections, admin shutdown, cannot connect now
		return busy(err, what)
	}
	if strings.HasPrefix(pe.Code, "08") { // connection exception
		return busy(err, what)
	}
	return server.Internal(err, what)
}

// conflictReasons are the specific reasons of unique violations; others
// are server.ReasonConflict.
var conflictReasons = map[string]server.Reason{
	"devices_pkey":                   server.ReasonDeviceExists,
	"devices_device_id_key":          server.ReasonDeviceExists,
	"issuances_actor_request_id_key": server.ReasonRequestIDReused,
}

// busy is EUnavailable (ReasonDatabaseBusy): the database was busy or
// could not be reached; trying again shortly may succeed.
func busy(err error, what string) *server.Error {
	return &server.Error{Code: server.EUnavailable, Reason: server.ReasonDatabaseBusy,
		Message: "the database was busy while " + what + "; try again", Err: err}
}

// unreachable reports whether err says the database could not be reached
// before the statement was sent: a failed connect, or an error pgconn
// marks safe to retry (nothing was sent). A cancelled or expired context
// is not: the caller gave up, and the transport answers for that.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.SafeToRetry(err)
}
