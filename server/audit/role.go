package audit

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ServiceRole is the database role the server runs as (migration 00002
// creates it NOLOGIN and grants it what the store needs). The server
// connects with a login role that is a member of it and runs SetRoleSQL
// on every pooled connection.
//
// Operators set up two roles:
//
//	-- the owner: runs the migrations (hotline-server migrate), owns the tables
//	CREATE ROLE hotline_owner LOGIN PASSWORD '…' CREATEROLE;
//	CREATE DATABASE hotline OWNER hotline_owner;
//	-- the server's login: nothing but membership in the service role
//	CREATE ROLE hotline_app LOGIN PASSWORD '…' NOINHERIT;
//	GRANT hotline_service TO hotline_app;   -- after the first migrate
//
// Without CREATEROLE for the owner, a superuser runs
// CREATE ROLE hotline_service NOLOGIN before the first migrate.
const ServiceRole = "hotline_service"

// SealerRole is the database role the sealer writes seals and checkpoints
// as (migration 00010): the only role besides the owner that may insert
// them. The sealer runs SET LOCAL ROLE hotline_sealer in each of its
// transactions, so its login must be a member; give it a login of its own
// (hotline-server serve --audit-database-url), and the service's login
// cannot write a seal:
//
//	CREATE ROLE hotline_seal LOGIN PASSWORD '…' NOINHERIT;
//	GRANT hotline_sealer TO hotline_seal;
const SealerRole = "hotline_sealer"

// SetRoleSQL switches a connection to ServiceRole.
const SetRoleSQL = "SET ROLE " + ServiceRole

// SetServiceRole runs SetRoleSQL on conn; it fits pgxpool.Config's
// AfterConnect.
func SetServiceRole(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, SetRoleSQL); err != nil {
		return fmt.Errorf("audit: %s (is the login role a member of %s? GRANT %s TO <login role>): %w",
			SetRoleSQL, ServiceRole, ServiceRole, err)
	}
	return nil
}

// Querier runs a query returning one row: *pgx.Conn, *pgxpool.Pool and
// pgx.Tx are Queriers.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// auditTables are the insert-only tables.
var auditTables = []string{"audit_events", "audit_seals", "audit_checkpoints"}

// checkRoleSQL lists the forbidden privileges current_user holds: any
// change of an audit table, writing a seal or a checkpoint (the sealer's
// alone), or giving an event its time. An owner or a superuser holds them
// all.
const checkRoleSQL = `SELECT current_user::text, coalesce(string_agg(p, ', ' ORDER BY p), '') FROM (
	SELECT p || ' on ' || t AS p
	FROM unnest($1::text[]) AS t, unnest(array['UPDATE', 'DELETE', 'TRUNCATE']) AS p
	WHERE has_table_privilege(current_user, t, p)
	UNION ALL
	SELECT 'INSERT on ' || t FROM unnest(array['audit_seals', 'audit_checkpoints']) AS t
	WHERE has_table_privilege(current_user, t, 'INSERT')
	UNION ALL
	SELECT 'INSERT of audit_events.at' WHERE has_column_privilege(current_user, 'audit_events', 'at', 'INSERT')
) forbidden`

// CheckServiceRole returns an error when the role q runs as (current_user)
// may UPDATE, DELETE or TRUNCATE any audit table, write seals or
// checkpoints, or date an event itself: the server refuses to start then,
// since its role could erase or forge the evidence.
func CheckServiceRole(ctx context.Context, q Querier) error {
	var user, held string
	if err := q.QueryRow(ctx, checkRoleSQL, auditTables).Scan(&user, &held); err != nil {
		return fmt.Errorf("audit: checking the database role's privileges: %w", err)
	}
	if held != "" {
		return fmt.Errorf("audit: database role %q may modify the audit log (%s); "+
			"the server must run as %s (connect as a member of it and SET ROLE %s) and must not own the tables",
			user, held, ServiceRole, ServiceRole)
	}
	return nil
}
