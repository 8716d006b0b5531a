package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

func TestMigrate(t *testing.T) {
	ctx := context.Background()
	t.Run("success/again-is-a-no-op", func(t *testing.T) {
		// TestMain migrated already; another replica starting migrates again.
		if err := postgres.Migrate(ctx, testURL); err != nil {
			t.Fatal(err)
		}
		cur, latest, err := postgres.MigrationStatus(ctx, testURL)
		if err != nil || cur != latest || cur < 1 {
			t.Fatalf("MigrationStatus = %d, %d, %v", cur, latest, err)
		}
	})
	t.Run("success/replicas-migrating-at-once", func(t *testing.T) {
		url := pgtest.NewDatabase(t, "migrate_race")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = postgres.Migrate(ctx, url) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		db, err := postgres.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if ms, err := db.Models(ctx); err != nil || len(ms) != 6 {
			t.Fatalf("Models after concurrent migrations = %d, %v", len(ms), err)
		}
	})
	t.Run("refused/unreachable-database", func(t *testing.T) {
		if err := postgres.Migrate(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"); err == nil {
			t.Fatal("Migrate on a closed port succeeded")
		}
		if _, err := postgres.Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"); err == nil {
			t.Fatal("Open on a closed port succeeded")
		}
	})
}
