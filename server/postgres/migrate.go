package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib" // the database/sql driver goose runs on
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// migrations are the schema, in order. A released file is never edited:
// add the next number instead.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Migrate applies every pending migration to the database at databaseURL.
// Several replicas may call it at once: a session advisory lock lets one
// migrate while the others wait.
func Migrate(ctx context.Context, databaseURL string) error {
	p, closeDB, err := provider(databaseURL)
	if err != nil {
		return err
	}
	defer closeDB()
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// MigrationStatus reports the current and the latest schema version.
func MigrationStatus(ctx context.Context, databaseURL string) (current, latest int64, err error) {
	p, closeDB, err := provider(databaseURL)
	if err != nil {
		return 0, 0, err
	}
	defer closeDB()
	current, latest, err = p.GetVersions(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: migration status: %w", err)
	}
	return current, latest, nil
}

// provider opens databaseURL for goose. The URL is parsed as Open parses
// it, so that the pool_* settings the server's URL may carry are accepted
// (and not sent to the server as unknown parameters), with the same
// connect timeout.
func provider(databaseURL string) (*goose.Provider, func(), error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("postgres: parse database URL: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	sqlDB := stdlib.OpenDB(*cfg.ConnConfig)
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		sqlDB.Close()
		return nil, nil, err
	}
	// Probe for the lock every second for up to five minutes (goose's default
	// probes every five seconds, which makes every waiting replica slow).
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
	if err != nil {
		sqlDB.Close()
		return nil, nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, fsys,
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		// A development database may hold a later version than a migration
		// that lands after it; apply the missing one rather than refuse to
		// start. A released migration never depends on a later-numbered
		// one, so the order between them does not matter.
		goose.WithAllowOutofOrder(true),
	)
	if err != nil {
		sqlDB.Close()
		return nil, nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	return p, func() { sqlDB.Close() }, nil
}
