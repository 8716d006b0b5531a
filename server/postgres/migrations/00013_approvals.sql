-- Requests for a supervisor's approval: a staff member refused an issuance
-- over a limit asks a supervisor to issue it. The request keeps the issue
-- request as made (ticket, method, note, request code); a grant makes the
-- issuance as the supervisor's override and links it here. Only a pending
-- request changes, once: to granted, denied or expired, which the CHECKs
-- hold the service's login to. Every change has its audit event, written
-- in the same transaction.

-- +goose Up
CREATE TABLE approvals (
    id             uuid PRIMARY KEY,
    requester      text NOT NULL CHECK (requester <> ''),
    requester_role text NOT NULL CHECK (requester_role IN ('agent', 'supervisor')),
    request_id     text NOT NULL CHECK (request_id <> '' AND length(request_id) <= 128),
    serial         text NOT NULL REFERENCES devices (serial),
    ticket         text NOT NULL CHECK (ticket <> ''),
    method         smallint NOT NULL CHECK (method BETWEEN 1 AND 4),
    method_note    text NOT NULL DEFAULT '',
    -- The nonce of the DVR's request code the code is to be bound to
    -- (as issuances.request_nonce); NULL: a time-based code.
    request_nonce  bigint CHECK (request_nonce >= 0 AND request_nonce < 8796093022208),
    blocked        text NOT NULL CHECK (blocked IN ('LIMIT_PER_DEVICE', 'LIMIT_PER_AGENT')),
    reason         text NOT NULL CHECK (btrim(reason) <> ''),
    state          text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'granted', 'denied', 'expired')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    decided_by     text,
    decided_at     timestamptz,
    comment        text,
    issuance_id    uuid REFERENCES issuances (id),
    CONSTRAINT approvals_requester_request_id_key UNIQUE (requester, request_id),
    CHECK (expires_at > created_at),
    -- Answered by a supervisor other than the requester, with a comment.
    CONSTRAINT approvals_answer CHECK ((state IN ('granted', 'denied')) =
        (decided_by IS NOT NULL AND decided_at IS NOT NULL AND btrim(comment) <> '')),
    CONSTRAINT approvals_four_eyes CHECK (decided_by IS DISTINCT FROM requester),
    CONSTRAINT approvals_issuance_granted CHECK (issuance_id IS NULL OR state = 'granted')
);
CREATE INDEX approvals_pending ON approvals (expires_at) WHERE state = 'pending';

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hotline_service') THEN
        GRANT SELECT, INSERT ON approvals TO hotline_service;
        GRANT UPDATE (state, decided_by, decided_at, comment, issuance_id) ON approvals TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE approvals;
