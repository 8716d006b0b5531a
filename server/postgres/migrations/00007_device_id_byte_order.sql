-- Near matches walk the registry's device ids as a trie: the children of a
-- prefix are found by ordered probes that skip from one child to the next,
-- so each probe costs one index descent instead of a scan. That needs the
-- ids in byte order whatever the database's collation is (a linguistic
-- collation may not keep the ids sharing a prefix together), hence this
-- index in the "C" collation next to the unique one.

-- +goose Up
CREATE INDEX devices_device_id_bytes ON devices (device_id COLLATE "C");

-- +goose Down
DROP INDEX devices_device_id_bytes;
