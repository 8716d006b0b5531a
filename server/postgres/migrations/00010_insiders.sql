-- What the service's own database login may do, narrowed to what the
-- service's code does, against an insider who holds that login:
--
--   - an issuance carries the service's proof that it made it (proof, an
--     HMAC under a keyring key the database never sees, over every field:
--     server.IssuanceMACMessage); the service refuses to derive a code from
--     a row whose proof fails;
--   - the service role may UPDATE only the devices columns its code writes,
--     and moves a device's sequence forward by one issuance at a time;
--   - an audit event's time is the database's clock: the service role may
--     not name the column "at" in an INSERT, so its DEFAULT
--     (clock_timestamp()) always applies;
--   - only the sealer's role (hotline_sealer) writes seals and
--     checkpoints.
--
-- A later migration that adds a column to audit_events must grant INSERT
-- on it to both roles. Released migrations are never edited: add a new
-- numbered file instead.

-- +goose Up

ALTER TABLE issuances ADD COLUMN proof bytea CONSTRAINT issuances_proof_check CHECK (length(proof) = 32);

-- The service role moves a device's sequence forward by one, never back,
-- and its issue time never back (the owner keeps the right to repair).
-- +goose StatementBegin
CREATE FUNCTION devices_sequence_forward() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'devices: % may move the sequence of % only forward by one issuance (from % to %)',
        current_user, OLD.serial, OLD.last_sequence, NEW.last_sequence
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER devices_sequence_forward BEFORE UPDATE OF last_sequence, last_issued_at ON devices
    FOR EACH ROW
    WHEN (current_user = 'hotline_service' AND (
        NEW.last_sequence NOT IN (OLD.last_sequence, OLD.last_sequence + 1)
        OR NEW.last_issued_at < OLD.last_issued_at
        OR (NEW.last_sequence = OLD.last_sequence AND NEW.last_issued_at IS DISTINCT FROM OLD.last_issued_at)))
    EXECUTE FUNCTION devices_sequence_forward();

-- The sealer's role, created like the service role (migration 00002): only
-- if missing, tolerating a race with another database of the cluster. The
-- owner is made a member so that a development server can SET ROLE to it;
-- in production the sealer connects with a login of its own that is a
-- member of hotline_sealer and nothing else.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_sealer') THEN
        BEGIN
            CREATE ROLE hotline_sealer NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role hotline_sealer does not exist and % may not create it', current_user
                    USING HINT = 'as a superuser: CREATE ROLE hotline_sealer NOLOGIN; then migrate again';
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'hotline_sealer', 'MEMBER') THEN
        EXECUTE format('GRANT hotline_sealer TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO hotline_sealer', current_schema());

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_service') THEN
        REVOKE UPDATE ON devices FROM hotline_service;
        GRANT UPDATE (last_sequence, last_issued_at, hold_reason, hold_by, hold_since,
            model, firmware, owner_contact) ON devices TO hotline_service;
        REVOKE INSERT ON audit_events, audit_seals, audit_checkpoints FROM hotline_service;
        GRANT INSERT (actor, role, client_addr, action, outcome, serial, ticket, method, reason,
            request_id, issuance_id, detail) ON audit_events TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd

GRANT SELECT ON audit_events, audit_seals, audit_checkpoints TO hotline_sealer;
GRANT INSERT ON audit_seals, audit_checkpoints TO hotline_sealer;
-- The sealer records a rewrite it detects as an audit event.
GRANT INSERT (actor, role, action, outcome, detail) ON audit_events TO hotline_sealer;
GRANT USAGE ON SEQUENCE audit_events_id_seq TO hotline_sealer;

-- +goose Down
REVOKE ALL ON audit_events, audit_seals, audit_checkpoints FROM hotline_sealer;
REVOKE ALL ON SEQUENCE audit_events_id_seq FROM hotline_sealer;
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_service') THEN
        REVOKE UPDATE (last_sequence, last_issued_at, hold_reason, hold_by, hold_since,
            model, firmware, owner_contact) ON devices FROM hotline_service;
        GRANT UPDATE ON devices TO hotline_service;
        REVOKE INSERT (actor, role, client_addr, action, outcome, serial, ticket, method, reason,
            request_id, issuance_id, detail) ON audit_events FROM hotline_service;
        GRANT INSERT ON audit_events, audit_seals, audit_checkpoints TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd
DROP TRIGGER devices_sequence_forward ON devices;
DROP FUNCTION devices_sequence_forward();
ALTER TABLE issuances DROP COLUMN proof;
