-- Which import, and which line of its file, wrote each device (issue 14):
-- the import that registered it, or the last that overwrote it with
-- --update. An import finds a later row of its own file that repeats a
-- serial or a device id by reading these columns of the device the row
-- runs into, so that the server keeps only the batch being built in
-- memory, not every serial of the file. NULL for a device registered one
-- by one (RegisterDevice) and for every device registered before this
-- migration.
--
-- Nullable columns without a default: adding them rewrites nothing, even
-- on a large registry. Their check is added NOT VALID: validating it would
-- scan every device under the ALTER's lock for nothing (every existing row
-- holds NULL in both), and it is enforced on every row written from now on
-- all the same.
--
-- import_id has no foreign key to device_imports, on purpose: its check
-- is a trigger call per inserted row, which cost about 15% of a batch's
-- insert and took the import from 0.88-0.90 of a plain COPY to 0.69-0.75
-- (BenchmarkImport, 300,000 rows, three runs each; 0.90-0.97 without the
-- key). Its one writer is the import's batch, in the transaction that
-- first read the import's row under a lock (postgres.DB.ImportBatch), and
-- imports are never deleted (the service role may not).
--
-- The service role's table-wide INSERT on devices (migration 00002) covers
-- the new columns; its UPDATE is per column (migration 00010), so the two
-- are granted here, for an import's update. Released migrations are never
-- edited: add a new numbered file instead.

-- +goose Up
ALTER TABLE devices
    ADD COLUMN import_id uuid,
    ADD COLUMN import_line integer,
    ADD CONSTRAINT devices_import_provenance CHECK (
        (import_id IS NULL AND import_line IS NULL) OR (import_id IS NOT NULL AND import_line >= 1)) NOT VALID;

-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hotline_service') THEN
        GRANT UPDATE (import_id, import_line) ON devices TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'hotline_service') THEN
        REVOKE UPDATE (import_id, import_line) ON devices FROM hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd
ALTER TABLE devices DROP CONSTRAINT devices_import_provenance,
    DROP COLUMN import_line,
    DROP COLUMN import_id;
