package postgres

import (
	"context"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// LiveGrants counts the issuances whose grant was signed by kid and has not
// expired at now: a grant key with live grants must stay published.
func (db *DB) LiveGrants(ctx context.Context, kid string, now time.Time) (int64, time.Time, error) {
	var n int64
	var last *time.Time
	err := db.pool.QueryRow(ctx,
		`SELECT count(*), max(expires_at) FROM issuances WHERE signing_kid = $1 AND expires_at > $2`,
		kid, now).Scan(&n, &last)
	if err != nil {
		return 0, time.Time{}, server.Internal(err, "counting live grants")
	}
	if last == nil {
		return n, time.Time{}, nil
	}
	return n, *last, nil
}

// DevicesUnderGeneration counts the devices provisioned under a master-key
// generation: that generation's key must be kept while any remains.
func (db *DB) DevicesUnderGeneration(ctx context.Context, gen int) (int64, error) {
	var n int64
	if err := db.pool.QueryRow(ctx, `SELECT count(*) FROM devices WHERE key_generation = $1`, gen).Scan(&n); err != nil {
		return 0, server.Internal(err, "counting devices under a key generation")
	}
	return n, nil
}
