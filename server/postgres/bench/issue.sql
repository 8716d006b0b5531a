-- The issue transaction of server/postgres (DB.Issue) as a pgbench script:
-- the same statements, in the same order, on the success path. Keep it in
-- step with the statements in issue.go.
--
--   psql "$DATABASE_URL" -v ndevices=1000 -f server/postgres/bench/setup.sql
--   pgbench -n -M prepared -c 8 -j 2 -T 30 -D ndevices=1000 -D nagents=200 \
--       -f server/postgres/bench/issue.sql "$DATABASE_URL"
--
-- -M prepared (or extended) is needed: variables holding timestamps are
-- sent as parameters. DB.Issue sends statements 1-4 as one pipelined batch
-- and 5-7 as another; pgbench sends one statement per round trip. The
-- issuance id, which the service chooses, is made by the INSERT here, so
-- that the script runs no statement DB.Issue does not.
-- No limits are enforced here: use enough devices and agents that the
-- Go side stays under its limits too.

\set dev random(1, :ndevices)
\set agent random(1, :nagents)
\set req random(1, 1000000000000)

BEGIN;
-- 1. Serialise this actor's issuances (issueLockNamespace = 0x484c).
SELECT pg_advisory_xact_lock(18508, hashtext('bench-agent-' || :agent));
-- 2. Idempotency.
SELECT id::text, request_id, serial, sequence, key_generation, signing_kid,
    issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason, request_nonce, proof
    FROM issuances WHERE actor = 'bench-agent-' || :agent AND request_id = 'bench-' || :req;
-- 3. The device, locked.
SELECT hold_reason, hold_by, hold_since, last_sequence, last_issued_at, key_generation, owner_contact
    FROM devices WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0') FOR UPDATE;
-- 4. The issue time and the limit counts.
WITH t AS (
    SELECT greatest(clock_timestamp(), (SELECT last_issued_at FROM devices
        WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0'))) AS now
)
SELECT t.now AS now,
    (SELECT count(*) FROM issuances WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND issued_at > t.now - interval '24 hours') AS device_count,
    (SELECT count(*) FROM issuances WHERE actor = 'bench-agent-' || :agent
        AND issued_at > t.now - interval '1 hour') AS agent_count,
    EXISTS (SELECT 1 FROM audit_events WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND at > t.now - interval '1 hour' AND actor = 'bench-agent-' || :agent
        AND action = 'device.owner_check' AND outcome = 'success') AS owner_checked,
    (SELECT count(*) FROM audit_events WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND action IN ('device.owner_check', 'device.owner_code_check') AND outcome = 'refused'
        AND detail ~ '^(owner|code)_mismatch'
        AND at > greatest(t.now - interval '24 hours', (SELECT last_issued_at FROM devices
            WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')))) AS owner_misses,
    (SELECT id::text FROM owner_challenges WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND actor = 'bench-agent-' || :agent AND verified_at IS NOT NULL AND used_by IS NULL
        ORDER BY verified_at DESC LIMIT 1) AS owner_code,
    (SELECT max(verified_at) FROM owner_challenges WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND actor = 'bench-agent-' || :agent AND verified_at IS NOT NULL AND used_by IS NULL) AS owner_code_at,
    (SELECT at FROM audit_events WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0')
        AND action = 'device.contact_change' AND outcome = 'success'
        ORDER BY at DESC, id DESC LIMIT 1) AS contact_changed_at
FROM t \gset
-- 5. The sequence number.
UPDATE devices SET last_sequence = last_sequence + 1, last_issued_at = :now::timestamptz
    WHERE serial = 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0') RETURNING last_sequence AS seq \gset
-- 6. The issuance (the id is chosen by the service; here by the database).
INSERT INTO issuances (id, request_id, serial, sequence, key_generation, signing_kid,
        issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason, request_nonce, proof)
    VALUES (gen_random_uuid(), 'bench-' || :req, 'BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0'), :seq, 1, 'bench-kid',
        :now::timestamptz, :now::timestamptz + interval '24 hours', 'bench-agent-' || :agent, 'agent', 'BENCH-1', 1, '', '',
        NULL, sha256(:req::text::bytea))
    RETURNING id::text AS id \gset
-- 7. Its audit event.
INSERT INTO audit_events (actor, role, client_addr, action, outcome, serial, ticket, method, reason, request_id, issuance_id, detail)
    VALUES ('bench-agent-' || :agent, 'agent', NULLIF('127.0.0.1', ''), 'recovery.issue', 'success',
        NULLIF('BENCH0#2020-01-01#1#DVR' || lpad(:dev::text, 13, '0'), ''), NULLIF('BENCH-1', ''), NULLIF(1::smallint, 0),
        NULLIF('', ''), NULLIF('bench-' || :req, ''), NULLIF(:id, '')::uuid, NULLIF('seq=' || :seq, ''));
END;
