package postgres

import (
	"context"
	"time"

	"github.com/dvrhotline/hotline/server"
)

var _ server.ConsoleStore = (*DB)(nil)

// CreateSession stores a new console session and drops the expired ones.
func (db *DB) CreateSession(ctx context.Context, s server.ConsoleSession) error {
	if _, err := db.pool.Exec(ctx, `DELETE FROM console_sessions WHERE expires_at < now()`); err != nil {
		return translate(err, "dropping expired console sessions")
	}
	_, err := db.pool.Exec(ctx, `INSERT INTO console_sessions (id_hash, subject, role, created_at, auth_time, last_seen, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, s.IDHash, s.Subject, string(s.Role), s.CreatedAt, s.AuthTime, s.LastSeen, s.ExpiresAt)
	return translate(err, "storing a console session")
}

// Session returns the console session with that id hash (ENotFound when none).
func (db *DB) Session(ctx context.Context, idHash []byte) (server.ConsoleSession, error) {
	s := server.ConsoleSession{IDHash: idHash}
	var role string
	err := db.pool.QueryRow(ctx, `SELECT subject, role, created_at, auth_time, last_seen, expires_at
		FROM console_sessions WHERE id_hash = $1`, idHash).Scan(&s.Subject, &role, &s.CreatedAt, &s.AuthTime, &s.LastSeen, &s.ExpiresAt)
	s.Role = server.Role(role)
	return s, translate(err, "reading a console session")
}

// TouchSession records the session's latest request.
func (db *DB) TouchSession(ctx context.Context, idHash []byte, at time.Time) error {
	_, err := db.pool.Exec(ctx, `UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1`, idHash, at)
	return translate(err, "updating a console session")
}

// DeleteSession ends a console session.
func (db *DB) DeleteSession(ctx context.Context, idHash []byte) error {
	_, err := db.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash)
	return translate(err, "ending a console session")
}

// MarkRevealed records that actor was shown the code of the issue form
// requestID; first is false when it had been shown already.
func (db *DB) MarkRevealed(ctx context.Context, actor, requestID, issuanceID string) (bool, error) {
	tag, err := db.pool.Exec(ctx, `INSERT INTO console_reveals (actor, request_id, issuance_id) VALUES ($1, $2, $3)
		ON CONFLICT (actor, request_id) DO NOTHING`, actor, requestID, issuanceID)
	if err != nil {
		return false, translate(err, "recording a code view")
	}
	return tag.RowsAffected() == 1, nil
}

// Revealed reports whether actor was shown the code of the issue form requestID.
func (db *DB) Revealed(ctx context.Context, actor, requestID string) (bool, error) {
	var n int
	err := db.pool.QueryRow(ctx, `SELECT count(*) FROM console_reveals WHERE actor = $1 AND request_id = $2`, actor, requestID).Scan(&n)
	return n > 0, translate(err, "reading a code view")
}
