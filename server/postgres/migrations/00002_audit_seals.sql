-- The tamper-evident audit log (issue 4): sealing moves out of
-- audit_events into insert-only tables, so that nobody ever needs UPDATE
-- on an audit event; and the service role the server runs as gets only
-- the grants it needs. Released migrations are never edited: add a new
-- numbered file instead.
--
-- Two roles (see server/audit's doc): the owner (this migration runs as
-- it) owns every table; the server connects with a login role that is a
-- member of hotline_service and runs SET ROLE hotline_service on every
-- connection, and refuses to start if that role could UPDATE, DELETE or
-- TRUNCATE the audit tables (audit.CheckServiceRole).

-- +goose Up

-- Every UPDATE, DELETE and TRUNCATE of an audit table is refused, for
-- every role including the owner. (An owner can still disable the
-- trigger: that is the attacker the hash chain and the signed checkpoints
-- are for.)
-- +goose StatementBegin
CREATE FUNCTION audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is forbidden', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
-- +goose StatementEnd

DROP TRIGGER audit_events_no_update ON audit_events;
DROP TRIGGER audit_events_no_delete ON audit_events;
DROP TRIGGER audit_events_no_truncate ON audit_events;
DROP FUNCTION audit_events_append_only();

DROP INDEX audit_events_unsealed;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_seal_all_or_none;
ALTER TABLE audit_events DROP COLUMN seal_seq;
ALTER TABLE audit_events DROP COLUMN hash;

-- The hash chain: seal seq n links event event_id with
-- hash = h_n = SHA-256(0x01 || h_{n-1} || leaf(event) || n as 8 bytes).
-- Seal order is the order of sealing, not of ids.
CREATE TABLE audit_seals (
    seq       bigint PRIMARY KEY CONSTRAINT audit_seals_seq_check CHECK (seq >= 1),
    event_id  bigint NOT NULL
              CONSTRAINT audit_seals_event_id_key UNIQUE
              CONSTRAINT audit_seals_event_id_fkey REFERENCES audit_events (id),
    hash      bytea NOT NULL CONSTRAINT audit_seals_hash_check CHECK (length(hash) = 32),
    sealed_at timestamptz NOT NULL DEFAULT now()
);

-- Signed checkpoints: (size, head = h_size, at) signed with Ed25519 by the
-- keyring's audit key kid. The sealer writes one with every batch.
CREATE TABLE audit_checkpoints (
    size      bigint PRIMARY KEY CONSTRAINT audit_checkpoints_size_check CHECK (size >= 1),
    head      bytea NOT NULL CONSTRAINT audit_checkpoints_head_check CHECK (length(head) = 32),
    at        timestamptz NOT NULL,
    kid       text NOT NULL CONSTRAINT audit_checkpoints_kid_check CHECK (kid <> ''),
    signature bytea NOT NULL CONSTRAINT audit_checkpoints_signature_check CHECK (length(signature) = 64)
);

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- The service role. Roles are cluster-wide and several databases (test
-- databases, staging) may share a cluster and migrate at once, so create it
-- only if missing and tolerate losing the race. Creating it needs
-- CREATEROLE; without it an operator creates the role first (see
-- server/audit's doc). The owner is made a member so that a development
-- server connecting as the owner can SET ROLE to it; production connects
-- as a login role that is a member of hotline_service and nothing else.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_service') THEN
        BEGIN
            CREATE ROLE hotline_service NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- another database of this cluster created it just now
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role hotline_service does not exist and % may not create it', current_user
                    USING HINT = 'as a superuser: CREATE ROLE hotline_service NOLOGIN; then migrate again';
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'hotline_service', 'MEMBER') THEN
        EXECUTE format('GRANT hotline_service TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO hotline_service', current_schema());
END;
$$;
-- +goose StatementEnd

-- Operational tables: what server/postgres's Store does, no more. Issuances
-- are never changed once written, so no UPDATE; nothing is ever deleted.
GRANT SELECT ON models TO hotline_service;
GRANT SELECT, INSERT, UPDATE ON devices TO hotline_service;
GRANT SELECT, INSERT ON issuances TO hotline_service;
-- The audit log: read and append, never change.
GRANT SELECT, INSERT ON audit_events, audit_seals, audit_checkpoints TO hotline_service;
GRANT USAGE, SELECT ON SEQUENCE audit_events_id_seq TO hotline_service;

-- +goose Down
REVOKE ALL ON models, devices, issuances, audit_events FROM hotline_service;
REVOKE ALL ON SEQUENCE audit_events_id_seq FROM hotline_service;
-- The role itself stays: it is cluster-wide and other databases may use it.

DROP TABLE audit_checkpoints;
DROP TABLE audit_seals;
DROP TRIGGER audit_events_append_only ON audit_events;
DROP TRIGGER audit_events_no_truncate ON audit_events;
DROP FUNCTION audit_append_only();

ALTER TABLE audit_events ADD COLUMN seal_seq bigint CONSTRAINT audit_events_seal_seq_key UNIQUE;
ALTER TABLE audit_events ADD COLUMN hash bytea;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_seal_all_or_none CHECK ((seal_seq IS NULL) = (hash IS NULL));
CREATE INDEX audit_events_unsealed ON audit_events (id) WHERE seal_seq IS NULL;

-- +goose StatementBegin
CREATE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit_events is append-only: DELETE is forbidden'
            USING ERRCODE = 'insufficient_privilege';
    ELSIF TG_OP = 'TRUNCATE' THEN
        RAISE EXCEPTION 'audit_events is append-only: TRUNCATE is forbidden'
            USING ERRCODE = 'insufficient_privilege';
    ELSIF TG_OP = 'UPDATE' THEN
        IF OLD.seal_seq IS NOT NULL OR OLD.hash IS NOT NULL THEN
            RAISE EXCEPTION 'audit_events is append-only: event % is already sealed', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF NEW.seal_seq IS NULL OR NEW.hash IS NULL THEN
            RAISE EXCEPTION 'audit_events is append-only: an UPDATE may only seal event % (set seal_seq and hash)', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF (to_jsonb(NEW) - 'seal_seq' - 'hash') IS DISTINCT FROM (to_jsonb(OLD) - 'seal_seq' - 'hash') THEN
            RAISE EXCEPTION 'audit_events is append-only: an UPDATE may change only seal_seq and hash of event %', OLD.id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
