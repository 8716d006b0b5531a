-- Bulk device import (issue 5): a record of each import and of each batch
-- it committed. A batch's row is written in the batch's own transaction,
-- with the devices it registered, so an import cut off midway still says
-- which batches landed and what they did; the import's one audit event
-- (device.import) is written when it finishes, with the sums of its
-- batches. Rows are staged per batch in a temporary table (no schema
-- needed). Released migrations are never edited: add a new numbered file
-- instead.

-- +goose Up

CREATE TABLE device_imports (
    id                 uuid PRIMARY KEY,
    actor              text NOT NULL CONSTRAINT device_imports_actor_check CHECK (actor <> ''),
    role               text NOT NULL,
    client_addr        text,
    update_conflicting boolean NOT NULL,
    key_generation     integer NOT NULL CONSTRAINT device_imports_key_generation_check CHECK (key_generation >= 1),
    started_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    sha256             text CONSTRAINT device_imports_sha256_check CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    CONSTRAINT device_imports_finished_has_sha256 CHECK ((finished_at IS NULL) = (sha256 IS NULL))
);

CREATE TABLE device_import_batches (
    import_id    uuid NOT NULL CONSTRAINT device_import_batches_import_id_fkey REFERENCES device_imports (id),
    seq          integer NOT NULL CONSTRAINT device_import_batches_seq_check CHECK (seq >= 1),
    first_line   integer,
    last_line    integer,
    received     integer NOT NULL CHECK (received >= 0),
    inserted     integer NOT NULL CHECK (inserted >= 0),
    updated      integer NOT NULL CHECK (updated >= 0),
    unchanged    integer NOT NULL CHECK (unchanged >= 0),
    conflicts    integer NOT NULL CHECK (conflicts >= 0),
    duplicates   integer NOT NULL CHECK (duplicates >= 0),
    invalid      integer NOT NULL CHECK (invalid >= 0),
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (import_id, seq),
    CONSTRAINT device_import_batches_counts_add_up CHECK (
        received = inserted + updated + unchanged + conflicts + duplicates + invalid)
);

-- The service role (migration 00002) records imports and their batches;
-- batches are never changed. Granted only where the role exists, so that
-- this migration does not depend on how the role was provisioned.
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hotline_service') THEN
        GRANT SELECT, INSERT, UPDATE ON device_imports TO hotline_service;
        GRANT SELECT, INSERT ON device_import_batches TO hotline_service;
    END IF;
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE device_import_batches;
DROP TABLE device_imports;
