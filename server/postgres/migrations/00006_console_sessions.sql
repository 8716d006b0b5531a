-- The support console's sign-in sessions and one-time code views.
--
-- A session is found by the SHA-256 of its 256-bit random id: the id itself
-- lives only in the staff member's cookie, so a copy of this table signs no
-- one in. Sessions end at expires_at (absolute) or after an idle period
-- measured from last_seen, both checked by the console on every request.
--
-- console_reveals records which issue forms (actor, request id) had their
-- code shown, so that reloading or resubmitting a form never shows the code
-- a second time; showing it again is an explicit, audited act.

-- +goose Up
CREATE TABLE console_sessions (
    id_hash    bytea PRIMARY KEY CHECK (length(id_hash) = 32),
    subject    text NOT NULL CHECK (subject <> ''),
    role       text NOT NULL CHECK (role IN ('agent', 'supervisor', 'auditor', 'provisioner')),
    created_at timestamptz NOT NULL,
    auth_time  timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

CREATE TABLE console_reveals (
    actor       text NOT NULL,
    request_id  text NOT NULL,
    issuance_id uuid NOT NULL,
    shown_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, request_id)
);

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_service') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO hotline_service;
        GRANT SELECT, INSERT ON console_reveals TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE console_reveals;
DROP TABLE console_sessions;
