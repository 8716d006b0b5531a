package postgres

import "context"

// NearMatchesScan exposes the brute-force reference of NearMatches to the
// package's external tests and benchmarks.
func (db *DB) NearMatchesScan(ctx context.Context, query string, n int) ([]string, error) {
	return db.nearMatchesScan(ctx, query, n)
}
