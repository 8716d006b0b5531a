-- A hold's reason is never blank: the database refuses one of spaces alone,
-- as it refused an empty one, so that no writer can hold a device without
-- saying why.

-- +goose Up
ALTER TABLE devices DROP CONSTRAINT devices_hold_reason_check;
ALTER TABLE devices ADD CONSTRAINT devices_hold_reason_check CHECK (btrim(hold_reason) <> '');

-- +goose Down
ALTER TABLE devices DROP CONSTRAINT devices_hold_reason_check;
ALTER TABLE devices ADD CONSTRAINT devices_hold_reason_check CHECK (hold_reason <> '');
