-- The e-mail route: one-time codes sent to the registered owner address
-- (owner_challenges) and the transactional outbox (mail_outbox). Released
-- migrations are never edited: add a new numbered file instead.
--
-- Neither table holds a secret. An owner code is re-derived from its row
-- and the keyring (HMAC under a key derived from the master key of
-- key_generation, over the row's random id and the serial); an issuance
-- mailed out is re-derived from its issuances row, as for a voice delivery.

-- +goose Up

-- The new verification method 5, owner-email-code.
ALTER TABLE issuances DROP CONSTRAINT issuances_method_check;
ALTER TABLE issuances ADD CONSTRAINT issuances_method_check CHECK (method BETWEEN 1 AND 5);
ALTER TABLE audit_events DROP CONSTRAINT audit_events_method_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_method_check CHECK (method BETWEEN 1 AND 5);

-- One row per code sent. verified_at is set by a matching entry,
-- wrong_entries counts the others; used_by is the one issuance the
-- verification was spent on.
CREATE TABLE owner_challenges (
    id             uuid PRIMARY KEY,
    serial         text NOT NULL CONSTRAINT owner_challenges_serial_fkey REFERENCES devices (serial),
    actor          text NOT NULL CONSTRAINT owner_challenges_actor_check CHECK (actor <> ''),
    key_generation integer NOT NULL CONSTRAINT owner_challenges_key_generation_check CHECK (key_generation >= 1),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at     timestamptz NOT NULL,
    wrong_entries  integer NOT NULL DEFAULT 0 CONSTRAINT owner_challenges_wrong_entries_check CHECK (wrong_entries >= 0),
    verified_at    timestamptz,
    used_by        uuid CONSTRAINT owner_challenges_used_by_key UNIQUE
                   CONSTRAINT owner_challenges_used_by_fkey REFERENCES issuances (id),
    CONSTRAINT owner_challenges_expiry_check CHECK (expires_at > created_at AND expires_at <= created_at + interval '1 hour'),
    CONSTRAINT owner_challenges_used_verified CHECK (used_by IS NULL OR verified_at IS NOT NULL)
);
CREATE INDEX owner_challenges_serial_created ON owner_challenges (serial, created_at);
CREATE INDEX owner_challenges_actor_created ON owner_challenges (actor, created_at);

-- The outbox: a row is written in the transaction of the act that sends
-- it. state goes queued -> sending (claimed by one sender, committed
-- before the SMTP conversation starts) -> sent | queued (a temporary
-- failure the server reported before accepting the message: retried at
-- next_attempt_at) | failed (permanent, given up, or unknown after a
-- sender stopped mid-send). sent and failed are final.
CREATE TABLE mail_outbox (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL CONSTRAINT mail_outbox_kind_check CHECK (kind IN ('owner_code', 'issuance')),
    serial          text NOT NULL CONSTRAINT mail_outbox_serial_fkey REFERENCES devices (serial),
    recipient       text NOT NULL CONSTRAINT mail_outbox_recipient_check CHECK (recipient LIKE '_%@_%'),
    challenge_id   uuid CONSTRAINT mail_outbox_challenge_id_key UNIQUE
                    CONSTRAINT mail_outbox_challenge_id_fkey REFERENCES owner_challenges (id),
    issuance_id     uuid CONSTRAINT mail_outbox_issuance_id_key UNIQUE
                    CONSTRAINT mail_outbox_issuance_id_fkey REFERENCES issuances (id),
    -- Whether the voice code was also shown to the agent (delivery
    -- VOICE_AND_EMAIL); false means the agent never sees it.
    read_out     boolean NOT NULL DEFAULT false,
    language        text NOT NULL DEFAULT 'en' CONSTRAINT mail_outbox_language_check CHECK (language ~ '^[a-z]{2}$'),
    actor           text NOT NULL CONSTRAINT mail_outbox_actor_check CHECK (actor <> ''),
    state           text NOT NULL DEFAULT 'queued'
                    CONSTRAINT mail_outbox_state_check CHECK (state IN ('queued', 'sending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CONSTRAINT mail_outbox_attempts_check CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_by      text,
    claimed_at      timestamptz,
    finished_at     timestamptz,
    message_id      text,
    last_reply      text,
    CONSTRAINT mail_outbox_kind_owner_code CHECK ((kind = 'owner_code') = (challenge_id IS NOT NULL)),
    CONSTRAINT mail_outbox_kind_issuance CHECK ((kind = 'issuance') = (issuance_id IS NOT NULL)),
    CONSTRAINT mail_outbox_sending_claimed CHECK (state <> 'sending' OR (claimed_by IS NOT NULL AND claimed_at IS NOT NULL))
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE state = 'queued';
CREATE INDEX mail_outbox_sending ON mail_outbox (claimed_at) WHERE state = 'sending';
CREATE INDEX mail_outbox_serial_created ON mail_outbox (serial, created_at DESC);

-- At most once, in the database: a claim is only of a queued row, and a
-- finished row never changes again, whoever asks.
-- +goose StatementBegin
CREATE FUNCTION mail_outbox_transitions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state IN ('sent', 'failed') THEN
        RAISE EXCEPTION 'mail_outbox %: a % message is final', OLD.id, OLD.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'mail_outbox_final';
    END IF;
    IF NEW.state = 'sending' AND OLD.state <> 'queued' THEN
        RAISE EXCEPTION 'mail_outbox %: only a queued message may be claimed (it is %)', OLD.id, OLD.state
            USING ERRCODE = 'check_violation', CONSTRAINT = 'mail_outbox_claim_queued';
    END IF;
    IF NEW.state = 'sending' AND NEW.attempts <> OLD.attempts + 1 THEN
        RAISE EXCEPTION 'mail_outbox %: a claim counts one attempt', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'mail_outbox_claim_counts';
    END IF;
    IF (NEW.id, NEW.kind, NEW.serial, NEW.recipient, NEW.challenge_id, NEW.issuance_id, NEW.read_out, NEW.actor, NEW.created_at)
        IS DISTINCT FROM
       (OLD.id, OLD.kind, OLD.serial, OLD.recipient, OLD.challenge_id, OLD.issuance_id, OLD.read_out, OLD.actor, OLD.created_at) THEN
        RAISE EXCEPTION 'mail_outbox %: what is sent never changes, only its delivery state', OLD.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'mail_outbox_content_fixed';
    END IF;
    RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER mail_outbox_transitions BEFORE UPDATE ON mail_outbox
    FOR EACH ROW EXECUTE FUNCTION mail_outbox_transitions();

GRANT SELECT, INSERT, UPDATE ON owner_challenges, mail_outbox TO hotline_service;

-- +goose Down
DROP TABLE mail_outbox;
DROP FUNCTION mail_outbox_transitions();
DROP TABLE owner_challenges;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_method_check;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_method_check CHECK (method BETWEEN 1 AND 4);
ALTER TABLE issuances DROP CONSTRAINT issuances_method_check;
ALTER TABLE issuances ADD CONSTRAINT issuances_method_check CHECK (method BETWEEN 1 AND 4);
