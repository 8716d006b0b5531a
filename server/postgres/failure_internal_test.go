package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
)

// TestTranslateUnreachableDatabase: a lost or refused connection is
// answered EUnavailable (clients retry by request id), a deadline stays a
// deadline, and a constraint violation is still the request's fault.
func TestTranslateUnreachableDatabase(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want server.Code
		drop bool // the connection must be closed
	}{
		{"unavailable/admin-shutdown", &pgconn.PgError{Severity: "FATAL", Code: "57P01"}, server.EUnavailable, true},
		{"unavailable/crash-shutdown", &pgconn.PgError{Severity: "FATAL", Code: "57P02"}, server.EUnavailable, true},
		{"unavailable/starting-up", &pgconn.PgError{Severity: "FATAL", Code: "57P03"}, server.EUnavailable, true},
		{"unavailable/read-only-primary", &pgconn.PgError{Severity: "ERROR", Code: "25006"}, server.EUnavailable, true},
		{"unavailable/connection-failure", &pgconn.PgError{Severity: "ERROR", Code: "08006"}, server.EUnavailable, true},
		{"unavailable/too-many-connections", &pgconn.PgError{Severity: "ERROR", Code: "53300"}, server.EUnavailable, false},
		{"unavailable/eof", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), server.EUnavailable, false},
		{"unavailable/refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, server.EUnavailable, false},
		{"internal/deadline", fmt.Errorf("query: %w", context.DeadlineExceeded), server.EInternal, false},
		{"conflict/unique", &pgconn.PgError{Severity: "ERROR", Code: "23505"}, server.EConflict, false},
		{"unavailable/serialization", &pgconn.PgError{Severity: "ERROR", Code: "40001"}, server.EUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(tc.err, "testing")
			if server.ErrorCode(got) != tc.want {
				t.Fatalf("translate(%v) = %v, want code %s", tc.err, got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("translate lost the cause %v", tc.err)
			}
			var pe *pgconn.PgError
			if errors.As(tc.err, &pe) && closesConnection(pe) != tc.drop {
				t.Errorf("closesConnection(%s) = %v, want %v", pe.Code, !tc.drop, tc.drop)
			}
		})
	}
}

// TestIssueRetriesOnlyUnreachable: Issue runs the transaction again only
// for translate's unreachable-database errors, never for the service's own
// EUnavailable (a sequence wrap) or a refusal.
func TestIssueRetriesOnlyUnreachable(t *testing.T) {
	if !retriable(translate(&pgconn.PgError{Severity: "FATAL", Code: "57P01"}, "x")) {
		t.Error("an administrator shutdown is not retried")
	}
	if retriable(&server.Error{Code: server.EUnavailable, Reason: server.ReasonSequenceWrap, Message: "wrap"}) {
		t.Error("a sequence wrap is retried at once")
	}
	if retriable(&server.Error{Code: server.ELimit, Message: "limit"}) {
		t.Error("a refusal is retried")
	}
	if retriable(translate(&pgconn.PgError{Severity: "ERROR", Code: "40001"}, "x")) {
		t.Error("a serialization failure is retried by Issue (it is answered Unavailable for the client to retry)")
	}
}

// TestConfigureBoundsWhatTheURLLeavesUnset: connect timeout, session
// timeouts and health-check period get their defaults; the URL's own
// settings win.
func TestConfigureBoundsWhatTheURLLeavesUnset(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://u@127.0.0.1:1/db?pool_health_check_period=10m")
	if err != nil {
		t.Fatal(err)
	}
	Configure(cfg)
	if cfg.ConnConfig.ConnectTimeout != DefaultConnectTimeout || cfg.HealthCheckPeriod != DefaultHealthCheckPeriod {
		t.Errorf("connect timeout %s, health check %s", cfg.ConnConfig.ConnectTimeout, cfg.HealthCheckPeriod)
	}
	if got := cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"]; got != "30000ms" {
		t.Errorf("idle_in_transaction_session_timeout = %q", got)
	}
	cfg, err = pgxpool.ParseConfig("postgres://u@127.0.0.1:1/db?connect_timeout=2&idle_in_transaction_session_timeout=5s")
	if err != nil {
		t.Fatal(err)
	}
	Configure(cfg)
	if cfg.ConnConfig.ConnectTimeout != 2*time.Second || cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] != "5s" {
		t.Errorf("the URL's settings were overridden: %s, %q", cfg.ConnConfig.ConnectTimeout, cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"])
	}
	if cfg.ConnConfig.OnPgError(nil, &pgconn.PgError{Severity: "ERROR", Code: "25006"}) {
		t.Error("a connection that met a read-only server is kept")
	}
	if !cfg.ConnConfig.OnPgError(nil, &pgconn.PgError{Severity: "ERROR", Code: "23505"}) {
		t.Error("a connection that met a unique violation is closed")
	}
}
