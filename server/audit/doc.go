// Package audit makes Hotline's audit log tamper-evident: a sealer links
// committed audit events into a hash chain shortly after they commit and
// signs checkpoints of its head with the keyring's audit key, and Verify
// recomputes the chain from the events and names the first event that was
// changed, removed, reordered or inserted. Log serves Verify and Latest to
// the API as a server.AuditLog (AuditService's VerifyLog and GetCheckpoint).
//
// # Why a hash chain, and why a separate sealer
//
// Every act writes its audit event in its own transaction (server/postgres);
// linking each event to its predecessor at insert time would make every
// issuance wait for the one before it. So the issue path only INSERTs, and
// the Sealer, one at a time across replicas under a transaction-level
// advisory lock, appends committed events to the chain in batches: events
// commit out of id order, and the seal order (seq 1, 2, …) is the order of
// sealing. A hash chain rather than an RFC 6962 Merkle tree: the verifier
// always reads the whole log (it must, to find the first bad event), so
// Merkle inclusion and consistency proofs would buy nothing here, and a
// chain is one hash per event and simpler to re-implement from this page.
// A checkpoint of size n pins the first n seals exactly like a Merkle root
// would.
//
// Sealing never updates audit_events: seals go to audit_seals and
// checkpoints to audit_checkpoints, all three insert-only (migration
// 00002): a trigger refuses every UPDATE, DELETE and TRUNCATE for every
// role, and the service role has no UPDATE, DELETE or TRUNCATE grant.
// Only the sealer's role (SealerRole, migration 00010) inserts seals and
// checkpoints, and no role but the owner gives an event its time: the
// column's DEFAULT, the database's clock, always applies.
//
// # The witness
//
// The sealer appends every checkpoint it signs to a Witness outside the
// database (DirWitness: a JSON-lines file in a folder the database's
// owner cannot write, hotline-server serve --audit-witness), and before
// every batch checks that the chain still continues the witness's last
// checkpoint. A chain that does not (events deleted with their seals and
// checkpoints, a history re-sealed) is never extended: the sealer records
// an ActionChainRewritten event and signs nothing more, whether it was
// running when it happened or was started afterwards; Verify, given the
// witness (Log.Witness), reports the truncation or the rewrite.
//
// # What it detects, and against whom
//
// The realistic attacker has the database owner's rights (and so can
// disable the triggers) but not the keyring. Verify reports:
//
//   - changed: an event's fields differ from what was sealed;
//   - reordered: an event carries the content that was sealed at another
//     position (two events swapped);
//   - removed: a sealed event or a seal is missing (a gap in seq);
//   - inserted: an event that cannot have been there when the sealer ran:
//     unsealed although events that happened more than the grace period
//     after it are sealed, or sealed after such events (a forged event with
//     a forged seal appended to the chain, back-dated), or a second row
//     with the id of a sealed event;
//   - checkpoint: a stored checkpoint whose signature does not verify
//     against the trusted audit keys, or whose head differs from the chain;
//   - unsigned: seals that no signed checkpoint covers (the sealer signs a
//     checkpoint in the same transaction as every batch);
//   - truncated / rewritten: the chain is shorter than, or differs at the
//     size of, a checkpoint held outside the database (given to verify, or
//     the witness's last);
//   - future: an event dated after the database's clock, or after the
//     checkpoint that sealed it: its time was forged (the sealer leaves
//     such an event unsealed until its time, so it never makes a genuine
//     later event look inserted);
//   - unaudited: an issuance without the recovery.issue success event of
//     the same id, serial, actor and sequence: it was written outside the
//     service (which also refuses to derive a code from it: its proof,
//     server.IssuanceMACMessage, does not verify);
//   - stale: events wait for a seal longer than the grace period (no
//     sealer is running).
//
// Verify reports every problem it finds, in the order found, up to
// MaxProblems: one problem does not hide another.
//
// An owner who drops every seal and checkpoint, rewrites events and lets
// the sealer re-seal the forged history gets a chain that verifies
// against the database alone; only a checkpoint kept elsewhere (the
// witness, or hotlinectl audit checkpoint stored with the auditors)
// catches it, and a sealer with a witness refuses to do the re-sealing.
// Events committed after the witness's last checkpoint and before the
// next one is published (one sealing batch) are protected by the
// database alone. An event inserted
// with the current time is indistinguishable from one the service wrote:
// the log proves what was in it when it was sealed, not that the writer
// was honest.
//
// The grace period (DefaultGrace) assumes no transaction stays open longer
// than that after writing its event; one that does is reported as
// inserted.
//
// # FORMAT
//
// Event encoding (canonical, version 1). The fields of an audit_events row,
// in this order, each written as a presence byte, 0x00 for SQL NULL
// (nothing follows) or 0x01 followed by the value's length as 4 bytes big
// endian and the value:
//
//	 1 id           8 bytes, big-endian two's complement
//	 2 at           8 bytes, big-endian: microseconds since 1970-01-01T00:00:00Z
//	 3 actor        UTF-8
//	 4 role         UTF-8
//	 5 client_addr  UTF-8
//	 6 action       UTF-8
//	 7 outcome      UTF-8
//	 8 serial       UTF-8
//	 9 ticket       UTF-8
//	10 method       2 bytes, big-endian
//	11 reason       UTF-8
//	12 request_id   UTF-8
//	13 issuance_id  16 bytes, the UUID's bytes
//	14 detail       UTF-8
//
// preceded by one version byte, 0x01. NULL and the empty string are
// different values.
//
// Chain:
//
//	leaf_n = SHA-256(0x00 || encoding(event sealed at seq n))
//	h_0    = 32 zero bytes
//	h_n    = SHA-256(0x01 || h_{n-1} || leaf_n || n as 8 bytes big-endian)
//
// audit_seals holds (seq n, event_id, h_n, sealed_at); seq runs 1, 2, 3, …
// without gaps.
//
// Checkpoint: the signed text is, with "\n" after each line,
//
//	hotline audit checkpoint v1
//	kid <kid>
//	size <n, decimal>
//	head <h_n, lower-case hex>
//	time <RFC 3339 UTC with exactly 6 fraction digits, e.g. 2026-01-02T03:04:05.123456Z>
//
// and the signature is Ed25519 over exactly those bytes by the audit key
// kid (keyring purpose "audit"). The text form (Checkpoint.MarshalText,
// what hotlinectl audit checkpoint prints) is the signed text followed by
//
//	signature <base64 standard encoding with padding>
//
// The JSON form has the members size, head (hex), time, kid and signature
// (base64). ParseCheckpoint reads either.
package audit
