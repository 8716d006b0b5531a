// Package pgtest gives each test package a PostgreSQL database of its own on
// the real server named by HOTLINE_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable). The database
// is created fresh and dropped afterwards; nothing is mocked.
//
// Use NewDatabase from a test, or Create from TestMain when the whole
// package shares one database:
//
//	func TestMain(m *testing.M) {
//		url, drop, err := pgtest.Create(context.Background(), "postgres")
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		drop(context.Background())
//		os.Exit(code)
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the environment variable naming the administrative connection
// the helpers create and drop databases through.
const EnvURL = "HOTLINE_TEST_DATABASE_URL"

// DefaultURL is used when EnvURL is unset: the local server with trust auth.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// AdminURL returns the administrative connection URL (EnvURL or DefaultURL).
func AdminURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// DatabaseName returns a fresh database name for name: lower case letters,
// digits and underscores, prefixed "hotline_test_", with a random suffix so
// concurrent runs of the same package never collide.
func DatabaseName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	n := b.String()
	if len(n) > 30 { // PostgreSQL identifiers stop at 63 bytes.
		n = n[:30]
	}
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms.
	}
	return "hotline_test_" + n + "_" + hex.EncodeToString(r[:])
}

// Create creates a fresh database for name and returns its URL and a
// function that drops it (terminating leftover connections). It is meant
// for TestMain; tests use NewDatabase.
func Create(ctx context.Context, name string) (dbURL string, drop func(context.Context) error, err error) {
	admin := AdminURL()
	u, err := url.Parse(admin)
	if err != nil || u.Scheme == "" {
		return "", nil, fmt.Errorf("pgtest: %s must be a postgres:// URL, got %q", EnvURL, admin)
	}
	dbName := DatabaseName(name)
	if err := adminExec(ctx, admin, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("pgtest: create database %s via %s (set %s to a reachable server): %w", dbName, redact(u), EnvURL, err)
	}
	u.Path = "/" + dbName
	drop = func(ctx context.Context) error {
		err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)")
		if err != nil {
			return fmt.Errorf("pgtest: drop database %s: %w", dbName, err)
		}
		return nil
	}
	return u.String(), drop, nil
}

// Main runs a test package's tests in a database of its own, for TestMain:
// it creates the database, runs prepare on it (the migrations), stores its
// URL in *url, runs m, drops the database and exits with the tests' status.
func Main(m *testing.M, name string, url *string, prepare func(ctx context.Context, url string) error) {
	ctx := context.Background()
	dbURL, drop, err := Create(ctx, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*url = dbURL
	code := 1
	if err := prepare(ctx, dbURL); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: preparing the database:", err)
	} else {
		code = m.Run()
	}
	if err := drop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}

// NewDatabase creates a fresh database for tb, returns its URL and drops it
// when tb's test ends. It fails tb when PostgreSQL is unreachable.
func NewDatabase(tb testing.TB, name string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dbURL, drop, err := Create(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := drop(ctx); err != nil {
			tb.Error(err)
		}
	})
	return dbURL
}

func adminExec(ctx context.Context, admin, sql string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// redact hides a password in u for error messages.
func redact(u *url.URL) string {
	return u.Redacted()
}
