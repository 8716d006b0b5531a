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
// or check violation EInvalid naming the field, a busy database or a lost
// or refused connection (a restart, a failover, a read-only server)
// EUnavailable (ReasonDatabaseBusy), and anything else EInternal wrapping
// the cause.
//
// Open and OpenConfig bound what a broken database can hold up (see
// Configure): connecting times out, dead TCP peers are noticed by
// keepalives, a transaction left idle by a vanished client is ended by
// the server, and a connection that reported a shutdown or a read-only
// server is closed instead of being handed out again.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

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

	pingMu   sync.Mutex
	pingConn *pgx.Conn // Ping's own connection, outside the pool
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

// OpenConfig is Open with a pool configuration built by the caller; it
// applies Configure's bounds first.
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*DB, error) {
	Configure(cfg)
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

// Close closes every connection of the pool, and Ping's.
func (db *DB) Close() {
	db.pool.Close()
	db.pingMu.Lock()
	defer db.pingMu.Unlock()
	if db.pingConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		db.pingConn.Close(ctx)
		cancel()
		db.pingConn = nil
	}
}

// Pool returns the underlying pool, for health checks and metrics.
func (db *DB) Pool() *pgxpool.Pool { return db.pool }

// pingSQL is Ping's question: may this server take writes?
const pingSQL = `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool`

// Ping checks that the database answers and takes writes (it is not a
// standby, nor read-only), on a connection of its own: a pool whose
// connections are all busy with slow calls is not a database that is
// down. It is the readiness check.
func (db *DB) Ping(ctx context.Context) error {
	db.pingMu.Lock()
	defer db.pingMu.Unlock()
	if db.pingConn == nil || db.pingConn.IsClosed() {
		c, err := pgx.ConnectConfig(ctx, db.pool.Config().ConnConfig)
		if err != nil {
			return err
		}
		db.pingConn = c
	}
	var readOnly bool
	err := db.pingConn.QueryRow(ctx, pingSQL).Scan(&readOnly)
	if err == nil && readOnly {
		err = errors.New("postgres: the database is read-only (a standby, or transaction_read_only)")
	}
	if err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		db.pingConn.Close(cctx)
		cancel()
		db.pingConn = nil
	}
	return err
}

// The bounds Configure applies when the configuration leaves them unset.
const (
	// DefaultConnectTimeout bounds establishing one connection (each host
	// of a multi-host URL in turn): connect_timeout.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultIdleInTransactionTimeout is the server's
	// idle_in_transaction_session_timeout for the pool's sessions: a
	// transaction whose client vanished (a killed replica, a partition)
	// releases its row and advisory locks after this long.
	DefaultIdleInTransactionTimeout = 30 * time.Second
	// DefaultClientCheckInterval is client_connection_check_interval: a
	// query whose client went away (its context ended) stops within this.
	DefaultClientCheckInterval = 2 * time.Second
	// DefaultHealthCheckPeriod is how often idle connections are checked.
	DefaultHealthCheckPeriod = 5 * time.Second
	// keepAlive: a silent TCP peer is declared dead after about 10+3*5 s.
	keepAliveIdle, keepAliveInterval, keepAliveCount = 10 * time.Second, 5 * time.Second, 3
)

// Configure sets the pool's failure bounds where cfg (from the URL) left
// them unset: DefaultConnectTimeout, TCP keepalives, the session timeouts
// above (as runtime parameters; the URL's options=-c... or a runtime
// parameter of the same name wins), DefaultHealthCheckPeriod when shorter
// than the pool's, and a PostgreSQL error handler that closes the
// connection on a FATAL error, an administrator or crash shutdown
// (57P01, 57P02), a server still starting (57P03), a connection-class
// error (08...) and a write refused by a read-only server (25006: the
// host is, or became, a standby). With target_session_attrs=read-write in
// a multi-host URL, the pool then reconnects to the new primary.
// OpenConfig calls it; it is idempotent.
func Configure(cfg *pgxpool.Config) {
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = DefaultConnectTimeout
	}
	d := &net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true,
		Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}}
	cc.DialFunc = d.DialContext
	for k, v := range map[string]time.Duration{
		"idle_in_transaction_session_timeout": DefaultIdleInTransactionTimeout,
		"client_connection_check_interval":    DefaultClientCheckInterval,
	} {
		if _, set := cc.RuntimeParams[k]; !set {
			cc.RuntimeParams[k] = fmt.Sprintf("%dms", v.Milliseconds())
		}
	}
	if cfg.HealthCheckPeriod <= 0 || cfg.HealthCheckPeriod > DefaultHealthCheckPeriod {
		cfg.HealthCheckPeriod = DefaultHealthCheckPeriod
	}
	cc.OnPgError = func(_ *pgconn.PgConn, pe *pgconn.PgError) bool {
		return !closesConnection(pe)
	}
}

// closesConnection reports whether a connection that received pe must not
// be used again.
func closesConnection(pe *pgconn.PgError) bool {
	switch {
	case strings.EqualFold(pe.Severity, "FATAL"), strings.EqualFold(pe.Severity, "PANIC"):
		return true
	case pe.Code == "25006", strings.HasPrefix(pe.Code, "57P"), strings.HasPrefix(pe.Code, "08"):
		return true
	}
	return false
}

// unreachable reports whether err says the database could not be reached
// or dropped the connection: a restart, a failover, a partition, a standby
// refusing a write. What was asked may or may not have been done; callers
// retry only what is safe to repeat (idempotent by request id, or
// pgconn.SafeToRetry: nothing was sent).
func unreachable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return closesConnection(pe) || pe.Code == "53300" // too_many_connections
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return pgconn.SafeToRetry(err) || errors.As(err, &ce) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

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
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return server.Internal(err, what) // answered Canceled or DeadlineExceeded
	}
	if unreachable(err) {
		return &server.Error{Code: server.EUnavailable, Reason: server.ReasonDatabaseBusy, Message: "the database was unreachable while " + what +
			" (restarting or failing over); try again: a retry with the same request id is answered exactly once", Err: err}
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
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
