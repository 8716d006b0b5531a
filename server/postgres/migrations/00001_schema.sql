-- The first schema of the Hotline store. Released migrations are never
-- edited: add a new numbered file instead.
--
-- Invariants live here as constraints, not only in Go, so that every
-- replica, every script and every future client keeps them.

-- +goose Up

-- levenshtein() for near matches on unknown serials. fuzzystrmatch is a
-- trusted extension: a database owner without superuser may create it.
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- The model catalogue. The model number encodes the hardware:
--   WBXHD <channels:2 digits> <drive bays:1 digit> S [<capacity>T]
-- so WBXHD041S is 4 channels and 1 bay, WBXHD082S 8 channels and 2 bays,
-- WBXHD162S 16 channels and 2 bays; a trailing "1T"/"2T"/"4T" is the
-- capacity in terabytes of the drive the unit ships with, and no "T" means
-- it ships without a drive.
CREATE TABLE models (
    model            text PRIMARY KEY
                     CONSTRAINT models_model_format CHECK (model ~ '^WBXHD[0-9]{3}S([0-9]+T)?$'),
    channels         integer NOT NULL CONSTRAINT models_channels_check CHECK (channels IN (4, 8, 16)),
    drives           integer NOT NULL CONSTRAINT models_drives_check CHECK (drives BETWEEN 1 AND 8),
    ships_with_drive boolean NOT NULL,
    drive_tb         integer
                     CONSTRAINT models_drive_tb_check CHECK (drive_tb IS NULL OR drive_tb > 0),
    description      text NOT NULL CONSTRAINT models_description_check CHECK (description <> ''),
    CONSTRAINT models_drive_consistent CHECK (ships_with_drive = (drive_tb IS NOT NULL))
);

INSERT INTO models (model, channels, drives, ships_with_drive, drive_tb, description) VALUES
    ('WBXHD041S1T',  4, 1, true,  1, 'Hybrid DVR, 4 channels, 1 drive bay, ships with a 1 TB drive'),
    ('WBXHD041S',    4, 1, false, NULL, 'Hybrid DVR, 4 channels, 1 drive bay, ships without a drive'),
    ('WBXHD082S2T',  8, 2, true,  2, 'Hybrid DVR, 8 channels, 2 drive bays, ships with a 2 TB drive'),
    ('WBXHD082S',    8, 2, false, NULL, 'Hybrid DVR, 8 channels, 2 drive bays, ships without a drive'),
    ('WBXHD162S4T', 16, 2, true,  4, 'Hybrid DVR, 16 channels, 2 drive bays, ships with a 4 TB drive'),
    ('WBXHD162S',   16, 2, false, NULL, 'Hybrid DVR, 16 channels, 2 drive bays, ships without a drive');

-- The device registry. serial is the canonical form (agent/serial's
-- String): every MAC binds it, so it is the key.
CREATE TABLE devices (
    serial          text PRIMARY KEY
                    CONSTRAINT devices_serial_format CHECK (serial ~ '^[A-Z0-9]{6}#[0-9]{4}-[0-9]{2}-[0-9]{2}#(0|[1-9][0-9]{0,2})#[A-Z][A-Z0-9]{7,23}$'),
    device_id       text NOT NULL
                    CONSTRAINT devices_device_id_key UNIQUE
                    CONSTRAINT devices_device_id_matches CHECK (device_id = split_part(serial, '#', 4)),
    model           text NOT NULL CONSTRAINT devices_model_fkey REFERENCES models (model),
    production_date date NOT NULL
                    CONSTRAINT devices_production_date_matches CHECK (production_date = split_part(serial, '#', 2)::date),
    firmware        text NOT NULL DEFAULT '',
    owner_contact   text NOT NULL DEFAULT '',
    key_generation  integer NOT NULL DEFAULT 1 CONSTRAINT devices_key_generation_check CHECK (key_generation >= 1),
    hold_reason     text CONSTRAINT devices_hold_reason_check CHECK (hold_reason <> ''),
    hold_by         text CONSTRAINT devices_hold_by_check CHECK (hold_by <> ''),
    hold_since      timestamptz,
    -- The last sequence number issued and when: the issue transaction
    -- reads and bumps them under the row lock, so sequences never repeat
    -- and issue times never go backwards for one device.
    last_sequence   bigint NOT NULL DEFAULT 0 CONSTRAINT devices_last_sequence_check CHECK (last_sequence >= 0),
    last_issued_at  timestamptz,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT devices_hold_all_or_none CHECK (
        (hold_reason IS NULL AND hold_by IS NULL AND hold_since IS NULL) OR
        (hold_reason IS NOT NULL AND hold_by IS NOT NULL AND hold_since IS NOT NULL)),
    CONSTRAINT devices_last_issued_consistent CHECK ((last_sequence = 0) = (last_issued_at IS NULL))
);

-- Issuances: the fields a temporary password was made from, never the code
-- itself (the code and the grant are re-derived from these).
CREATE TABLE issuances (
    id              uuid PRIMARY KEY,
    request_id      text NOT NULL CONSTRAINT issuances_request_id_check CHECK (request_id <> '' AND length(request_id) <= 128),
    serial          text NOT NULL CONSTRAINT issuances_serial_fkey REFERENCES devices (serial),
    sequence        bigint NOT NULL CONSTRAINT issuances_sequence_check CHECK (sequence >= 1),
    key_generation  integer NOT NULL CONSTRAINT issuances_key_generation_check CHECK (key_generation >= 1),
    signing_kid     text NOT NULL CONSTRAINT issuances_signing_kid_check CHECK (signing_kid <> ''),
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    actor           text NOT NULL CONSTRAINT issuances_actor_check CHECK (actor <> ''),
    actor_role      text NOT NULL CONSTRAINT issuances_actor_role_check CHECK (actor_role IN ('agent', 'supervisor')),
    ticket          text NOT NULL CONSTRAINT issuances_ticket_check CHECK (ticket <> ''),
    method          smallint NOT NULL CONSTRAINT issuances_method_check CHECK (method BETWEEN 1 AND 4),
    method_note     text NOT NULL DEFAULT '',
    override_reason text NOT NULL DEFAULT '',
    -- The idempotency key is the client's request id, per staff member.
    CONSTRAINT issuances_actor_request_id_key UNIQUE (actor, request_id),
    CONSTRAINT issuances_serial_sequence_key UNIQUE (serial, sequence),
    CONSTRAINT issuances_expiry_check CHECK (expires_at > issued_at AND expires_at <= issued_at + interval '24 hours'),
    CONSTRAINT issuances_method_note_check CHECK (method <> 4 OR method_note <> '')
);

-- The limit counts: issuances of one device, and of one staff member, in a
-- time window.
CREATE INDEX issuances_serial_issued_at ON issuances (serial, issued_at);
CREATE INDEX issuances_actor_issued_at ON issuances (actor, issued_at);

-- The append-only audit log. seal_seq and hash are filled once by the
-- sealer (the hash chain); nothing else may ever change.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       text NOT NULL,
    role        text NOT NULL,
    client_addr text,
    action      text NOT NULL CONSTRAINT audit_events_action_check CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    outcome     text NOT NULL CONSTRAINT audit_events_outcome_check CHECK (outcome IN ('success', 'refused')),
    serial      text,
    ticket      text,
    method      smallint CONSTRAINT audit_events_method_check CHECK (method BETWEEN 1 AND 4),
    reason      text,
    request_id  text,
    issuance_id uuid CONSTRAINT audit_events_issuance_id_fkey REFERENCES issuances (id),
    detail      text,
    seal_seq    bigint CONSTRAINT audit_events_seal_seq_key UNIQUE,
    hash        bytea,
    CONSTRAINT audit_events_seal_all_or_none CHECK ((seal_seq IS NULL) = (hash IS NULL)),
    CONSTRAINT audit_events_issue_success_has_issuance CHECK (
        action <> 'recovery.issue' OR outcome <> 'success' OR issuance_id IS NOT NULL)
);

CREATE INDEX audit_events_serial_at ON audit_events (serial, at DESC, id DESC);
CREATE INDEX audit_events_actor_at ON audit_events (actor, at DESC, id DESC);
CREATE INDEX audit_events_at ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_issuance_id ON audit_events (issuance_id) WHERE issuance_id IS NOT NULL;
-- What the sealer still has to link.
CREATE INDEX audit_events_unsealed ON audit_events (id) WHERE seal_seq IS NULL;

-- Append-only, enforced for every role including the owner (the service
-- role also lacks the grants; see issue 4). The only change allowed is the
-- sealer's: setting seal_seq and hash once, from NULL, leaving every other
-- column as it was.
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

-- +goose Down
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE issuances;
DROP TABLE devices;
DROP TABLE models;
