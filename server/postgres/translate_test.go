package postgres

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvrhotline/hotline/server"
)

// translate's codes and reasons for the errors a store meets; the
// constraint violations are also proven against the database in
// store_test.go.
func TestTranslateReasons(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Nothing listens on port 1: a real connect failure.
	_, connErr := pgconn.Connect(ctx, "postgres://postgres@127.0.0.1:1/none?connect_timeout=2")
	if connErr == nil {
		t.Fatal("connected to port 1")
	}
	tests := []struct {
		name   string
		err    error
		code   server.Code
		reason server.Reason
	}{
		{"device-exists/duplicate-serial", &pgconn.PgError{Code: "23505", ConstraintName: "devices_pkey"}, server.EConflict, server.ReasonDeviceExists},
		{"device-exists/duplicate-device-id", &pgconn.PgError{Code: "23505", ConstraintName: "devices_device_id_key"}, server.EConflict, server.ReasonDeviceExists},
		{"request-id-reused/duplicate-request-id", &pgconn.PgError{Code: "23505", ConstraintName: "issuances_actor_request_id_key"}, server.EConflict, server.ReasonRequestIDReused},
		{"conflict/other-unique-violation", &pgconn.PgError{Code: "23505", ConstraintName: "something_key"}, server.EConflict, server.ReasonConflict},
		{"database-busy/serialization-failure", &pgconn.PgError{Code: "40001"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/deadlock", &pgconn.PgError{Code: "40P01"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/lock-not-available", &pgconn.PgError{Code: "55P03"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/too-many-connections", &pgconn.PgError{Code: "53300"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/admin-shutdown", &pgconn.PgError{Code: "57P01"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/connection-exception", &pgconn.PgError{Code: "08006"}, server.EUnavailable, server.ReasonDatabaseBusy},
		{"database-busy/connect-refused", connErr, server.EUnavailable, server.ReasonDatabaseBusy},
		{"not-found/no-rows", pgx.ErrNoRows, server.ENotFound, server.ReasonNotFound},
		{"internal/cancelled-is-not-busy", context.Canceled, server.EInternal, server.ReasonInternal},
		{"internal/unknown-error", errors.New("boom"), server.EInternal, server.ReasonInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var se *server.Error
			if !errors.As(translate(tt.err, "testing"), &se) {
				t.Fatalf("translate(%v) is not a *server.Error", tt.err)
			}
			if se.Code != tt.code || se.ReasonOf() != tt.reason {
				t.Errorf("translate(%v) = %s/%s, want %s/%s", tt.err, se.Code, se.ReasonOf(), tt.code, tt.reason)
			}
		})
	}
}
