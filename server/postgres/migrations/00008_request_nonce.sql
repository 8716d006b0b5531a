-- +goose Up
-- A voice code bound to a DVR's request code (format version 2) is minted
-- from the request's nonce: kept with the issuance, so that a retry
-- returns the identical code. NULL: a time-based code.
ALTER TABLE issuances ADD COLUMN request_nonce bigint
    CHECK (request_nonce >= 0 AND request_nonce < 8796093022208); -- 2^43

-- +goose Down
ALTER TABLE issuances DROP COLUMN request_nonce;
