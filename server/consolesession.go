package server

import (
	"context"
	"time"
)

// ConsoleSession is a staff member's signed-in session of the support
// console. It is found by IDHash, the SHA-256 of the session id; the id
// itself is only in the staff member's cookie.
type ConsoleSession struct {
	// IDHash is the SHA-256 of the 256-bit random session id.
	IDHash []byte
	// Subject and Role are who signed in, as the identity provider said.
	Subject string
	Role    Role
	// CreatedAt is the sign-in; AuthTime when the identity provider last
	// authenticated the person (for the fresh sign-in a code reveal needs).
	CreatedAt, AuthTime time.Time
	// LastSeen is the last request (for the idle timeout); ExpiresAt the
	// absolute end of the session.
	LastSeen, ExpiresAt time.Time
}

// ConsoleStore keeps the console's sessions and the record of which issue
// forms had their code shown. server/postgres implements it.
type ConsoleStore interface {
	// CreateSession stores a new session (and drops expired ones).
	CreateSession(ctx context.Context, s ConsoleSession) error
	// Session returns the session with that id hash; ENotFound when none.
	Session(ctx context.Context, idHash []byte) (ConsoleSession, error)
	// TouchSession sets the session's LastSeen.
	TouchSession(ctx context.Context, idHash []byte, at time.Time) error
	// DeleteSession ends a session (sign-out); ending an unknown one is no error.
	DeleteSession(ctx context.Context, idHash []byte) error
	// MarkRevealed records that actor was shown the code of the issue form
	// requestID; first is false when it had been shown before.
	MarkRevealed(ctx context.Context, actor, requestID, issuanceID string) (first bool, err error)
	// Revealed reports whether actor was already shown the code of the
	// issue form requestID.
	Revealed(ctx context.Context, actor, requestID string) (bool, error)
}
