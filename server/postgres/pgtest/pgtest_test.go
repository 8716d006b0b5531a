package pgtest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

func TestNewDatabase(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("creates", func(t *testing.T) {
		url := pgtest.NewDatabase(t, "Pg Test/self")
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "hotline_test_pg_test_self_") {
			t.Errorf("database %q, want hotline_test_pg_test_self_<random>", name)
		}
	})
	// The subtest's cleanup dropped it.
	conn, err := pgx.Connect(ctx, pgtest.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n)
	if name == "" || n != 0 {
		t.Errorf("database %q still exists after cleanup", name)
	}
}

func TestDatabaseNameIsUniqueAndShort(t *testing.T) {
	a, b := pgtest.DatabaseName(strings.Repeat("x", 100)), pgtest.DatabaseName(strings.Repeat("x", 100))
	if a == b || len(a) > 63 {
		t.Errorf("names %q and %q: want distinct, at most 63 bytes", a, b)
	}
}
