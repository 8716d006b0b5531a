package postgres_test

import (
	"context"
	"testing"
)

func TestMigrateIsIdempotent(t *testing.T) {
	// TestMain migrated already; a second run (another replica) is a no-op.
	if err := postgresMigrate(context.Background()); err != nil {
		t.Fatal(err)
	}
}
