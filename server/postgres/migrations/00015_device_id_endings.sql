-- Near matches also read the device ids from their ends, by length. A
-- typed id's mistakes can only be where registered ids allow: everything
-- after the last mistake is an ending of the typed id that some
-- registered id of the result's length shares, and a result has one of
-- the lengths registered ids have. This index gives both in a few
-- descents: the lengths by skipping from one to the next, and for each
-- length the ids, reversed in byte order, next to the reversed query.
-- Built concurrently: a registry of millions goes on taking issuances and
-- imports while the index is made.

-- +goose NO TRANSACTION

-- +goose Up
-- An index of this name can only be left by an interrupted run of this
-- migration, and then it is invalid (never used, yet kept up to date):
-- it is built anew.
DROP INDEX CONCURRENTLY IF EXISTS devices_device_id_endings;
CREATE INDEX CONCURRENTLY devices_device_id_endings
    ON devices (char_length(device_id), reverse(device_id) COLLATE "C");

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS devices_device_id_endings;
