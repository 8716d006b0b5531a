-- Devices for bench/issue.sql: BENCH0#2020-01-01#1#DVR0000000000001 and on.
-- Run with psql on a migrated database:
--   psql "$DATABASE_URL" -v ndevices=1000 -f server/postgres/bench/setup.sql
INSERT INTO devices (serial, device_id, model, production_date)
SELECT 'BENCH0#2020-01-01#1#DVR' || lpad(i::text, 13, '0'), 'DVR' || lpad(i::text, 13, '0'), 'WBXHD082S2T', date '2020-01-01'
FROM generate_series(1, :ndevices) AS i
ON CONFLICT DO NOTHING;
