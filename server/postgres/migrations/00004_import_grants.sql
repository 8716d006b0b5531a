-- The service role's rights on imports, narrowed: it may only finish an
-- import (finished_at, sha256), never rewrite who ran it or with which
-- options, nor re-open a finished one. Its staging tables are temporary
-- tables: grant TEMPORARY explicitly rather than rely on PUBLIC's default,
-- which hardened clusters revoke.

-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hotline_service') THEN
        REVOKE UPDATE ON device_imports FROM hotline_service;
        GRANT UPDATE (finished_at, sha256) ON device_imports TO hotline_service;
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO hotline_service', current_database());
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hotline_service') THEN
        REVOKE UPDATE (finished_at, sha256) ON device_imports FROM hotline_service;
        GRANT UPDATE ON device_imports TO hotline_service;
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM hotline_service', current_database());
    END IF;
END;
$$;
-- +goose StatementEnd
