package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/server"
)

// Bulk import (server.ImportStore). An import is a row of device_imports;
// each batch is one transaction that
//
//  1. copies the batch (pgx CopyFrom, binary) into a temporary staging
//     table dropped at commit: no WAL, no indexes, one round trip;
//  2. runs one merge statement, INSERT ... SELECT ... WHERE NOT EXISTS (a
//     device with the serial or the device id): the new devices, each
//     with the import's id and its line (devices.import_id, import_line);
//  3. only when rows were left out, reads those that differ from the
//     registry, those that ran into a device an earlier batch of this
//     import wrote (by import_id and import_line) and, with Update, those
//     that give an owner contact, and asks server.JudgeImportMatch about
//     each: a duplicate of that earlier line, a conflict, unchanged, or
//     written by one UPDATE of model, firmware and owner contact for all
//     of them (never holds, sequence numbers or key generation, never a
//     device on hold; the import and line recorded as the device's last
//     writer), each written device and each contact change audited; a
//     device id registered under another serial is a conflict; the rest
//     unchanged;
//  4. records the batch in device_import_batches and commits.
//
// So a batch lands whole or not at all, a re-run of the same file finds
// every committed row unchanged, a row repeating one of an earlier batch
// is that row's duplicate without the session remembering the file, and a
// device id registered under another serial is a row's conflict, not the
// batch's failure.

var _ server.ImportStore = (*DB)(nil)

// BeginImport records a new import by a with opts (KeyGeneration defaults
// to 1) and returns its id.
func (db *DB) BeginImport(ctx context.Context, a server.Actor, opts server.ImportOptions) (string, error) {
	if opts.KeyGeneration == 0 {
		opts.KeyGeneration = 1
	}
	id := server.NewUUID()
	_, err := db.pool.Exec(ctx, `INSERT INTO device_imports (id, actor, role, client_addr, update_conflicting, key_generation)
		VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6)`, id, a.Subject, string(a.Role), a.ClientAddr, opts.Update, opts.KeyGeneration)
	if err != nil {
		return "", translate(err, "beginning an import")
	}
	return id, nil
}

// errRaced says that a device was registered (one by one, outside an
// import) between the merge's snapshot and its insert. The batch is rolled
// back and run again, which sees it.
var errRaced = errors.New("postgres: a staged row was registered concurrently")

// ImportBatch applies batch b of import importID in one transaction and
// reports what it did, conflicts with their line numbers and what differs.
// A batch whose Seq is already committed is not applied again: its stored
// counts are returned (without row errors). The import must exist and not
// be finished.
func (db *DB) ImportBatch(ctx context.Context, a server.Actor, importID string, b server.ImportBatch, check func(server.ImportState) *server.Error) (server.ImportReport, error) {
	if b.Seq < 1 {
		return server.ImportReport{}, server.Invalid("seq", "batches are numbered from 1, got %d", b.Seq)
	}
	var rep server.ImportReport
	var err error
	for range 3 {
		rep, err = db.importBatch(ctx, a, importID, b, check)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && strings.HasPrefix(pe.ConstraintName, "devices_") {
			err = errRaced
		}
		if !errors.Is(err, errRaced) {
			break
		}
	}
	if errors.Is(err, errRaced) {
		return server.ImportReport{}, &server.Error{Code: server.EUnavailable,
			Message: "devices were being registered concurrently with this batch; send it again", Err: err}
	}
	if err != nil {
		return server.ImportReport{}, translate(err, "importing a batch of devices")
	}
	return rep, nil
}

func (db *DB) importBatch(ctx context.Context, a server.Actor, importID string, b server.ImportBatch, check func(server.ImportState) *server.Error) (server.ImportReport, error) {
	rep := server.ImportReport{ImportID: importID, Batches: 1,
		Received: len(b.Rows) + b.Invalid + b.Duplicates, Invalid: b.Invalid, Duplicates: b.Duplicates}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var (
			st     server.ImportState
			update bool
			keyGen int
			done   *int
		)
		// optimistic: the previous batch inserted every row it had (or this
		// is the first), so this one probably will too.
		var optimistic bool
		err := tx.QueryRow(ctx, `SELECT i.actor, i.update_conflicting, i.key_generation, i.finished_at IS NOT NULL, b.received,
				COALESCE(p.inserted = p.received - p.invalid - p.duplicates, $2 = 1)
			FROM device_imports i
			LEFT JOIN device_import_batches b ON b.import_id = i.id AND b.seq = $2
			LEFT JOIN device_import_batches p ON p.import_id = i.id AND p.seq = $2 - 1
			WHERE i.id = $1 FOR SHARE OF i`, importID, b.Seq).Scan(&st.Actor, &update, &keyGen, &st.Finished, &done, &optimistic)
		if errors.Is(err, pgx.ErrNoRows) {
			return server.Errorf(server.ENotFound, "no import %s", clip.Quote(importID, 80))
		}
		if err != nil {
			return err
		}
		if e := check(st); e != nil {
			return e
		}
		if done != nil {
			rep = server.ImportReport{ImportID: importID}
			return tx.QueryRow(ctx, `SELECT 1, received, inserted, updated, unchanged, conflicts, duplicates, invalid
				FROM device_import_batches WHERE import_id = $1 AND seq = $2`, importID, b.Seq).
				Scan(&rep.Batches, &rep.Received, &rep.Inserted, &rep.Updated, &rep.Unchanged, &rep.Conflicts, &rep.Duplicates, &rep.Invalid)
		}
		if len(b.Rows) > 0 {
			if err := mergeBatch(ctx, tx, a, importID, b.Rows, keyGen, update, optimistic, &rep); err != nil {
				return err
			}
		}
		var first, last *int
		if len(b.Rows) > 0 {
			f, l := b.Rows[0].Line, b.Rows[len(b.Rows)-1].Line
			first, last = &f, &l
		}
		_, err = tx.Exec(ctx, `INSERT INTO device_import_batches
			(import_id, seq, first_line, last_line, received, inserted, updated, unchanged, conflicts, duplicates, invalid)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			importID, b.Seq, first, last, rep.Received, rep.Inserted, rep.Updated, rep.Unchanged, rep.Conflicts, rep.Duplicates, rep.Invalid)
		if err != nil {
			return err
		}
		// The batch changed the registry: its own event, in its
		// transaction, so that an import cut off before FinishImport (which
		// writes the import's one summary event) leaves no unaudited act.
		e := event(a, server.ActionImportBatch, server.OutcomeSuccess, "")
		e.RequestID = importID
		e.Detail = fmt.Sprintf("seq=%d %s", b.Seq, rep.Summary())
		return insertEvent(ctx, tx, e)
	})
	return rep, err
}

// stageSQL is the per-batch staging table: temporary (no WAL, local
// buffers), no indexes, dropped with the transaction.
const stageSQL = `CREATE TEMP TABLE import_stage (
	line integer NOT NULL,
	serial text NOT NULL,
	device_id text NOT NULL,
	model text NOT NULL,
	production_date date NOT NULL,
	firmware text NOT NULL,
	owner_contact text NOT NULL
) ON COMMIT DROP`

var stageColumns = []string{"line", "serial", "device_id", "model", "production_date", "firmware", "owner_contact"}

// insertSQL inserts the staged devices that are new, each with import $2
// and its line: one statement per batch. New rows are found with NOT
// EXISTS rather than ON CONFLICT DO NOTHING: speculative insertion cost
// about a fifth more per row. Imports take importLock, so they cannot race
// each other; a device registered one by one in between makes the INSERT
// fail with a unique violation, and the batch is rolled back and run again
// (errRaced).
const insertSQL = `INSERT INTO devices (serial, device_id, model, production_date, firmware, owner_contact, key_generation, import_id, import_line)
	SELECT serial, device_id, model, production_date, firmware, owner_contact, $1, $2::uuid, line FROM import_stage s
	WHERE NOT EXISTS (SELECT FROM devices d WHERE d.serial = s.serial)
		AND NOT EXISTS (SELECT FROM devices d WHERE d.device_id = s.device_id)`

// optimisticSQL is insertSQL for a batch expected to be all new.
const optimisticSQL = `INSERT INTO devices (serial, device_id, model, production_date, firmware, owner_contact, key_generation, import_id, import_line)
	SELECT serial, device_id, model, production_date, firmware, owner_contact, $1, $2::uuid, line FROM import_stage`

// classifySQL runs only when insertSQL left rows out (a re-import, a file
// overlapping the registry, a row repeating one of an earlier batch). It
// sees the batch's own inserts and leaves them out by their import ($2)
// and line, and returns only the staged rows that ran into a device an
// earlier line of this import wrote (a duplicate, whatever else), that
// differ from the device holding their serial (d), whose device id is
// registered under another serial (o) and, with $1 (an update), every
// registered row that gives an owner contact; every other row that was
// not inserted is unchanged. The last column is the line of this import
// that wrote the device matched, 0 when none did (server.ImportMatch).
const classifySQL = `SELECT s.line, s.serial, s.device_id, s.model, s.firmware, s.owner_contact,
	d.serial IS NOT NULL, COALESCE(d.model, ''), COALESCE(d.firmware, ''), COALESCE(d.owner_contact, ''),
	d.hold_reason IS NOT NULL, COALESCE(o.serial, ''),
	CASE WHEN d.serial IS NOT NULL THEN CASE WHEN d.import_id = $2 THEN d.import_line ELSE 0 END
		WHEN o.import_id = $2 THEN o.import_line ELSE 0 END
FROM import_stage s
LEFT JOIN devices d ON d.serial = s.serial
LEFT JOIN devices o ON d.serial IS NULL AND o.device_id = s.device_id
WHERE (d.import_id, d.import_line) IS DISTINCT FROM ($2::uuid, s.line)
	AND (d.serial IS NULL OR d.import_id = $2
		OR (d.model, d.firmware, d.owner_contact) IS DISTINCT FROM (s.model, s.firmware, s.owner_contact)
		OR ($1::boolean AND s.owner_contact <> ''))
ORDER BY s.line`

// importLock is the transaction-level advisory lock every import batch
// holds: batches of concurrent imports apply one at a time, so that their
// merges never race (the database does one COPY-speed stream anyway).
const importLock = 0x686f746c696d7074 // "hotlimpt"

// updateSQL overwrites what an import may change of devices not on hold,
// and records import $6 and the row's line as their last writer, so that
// a later batch's repeat of the row is its duplicate. A blank owner
// contact in the file never erases a registered one.
const updateSQL = `UPDATE devices d SET model = u.model, firmware = u.firmware,
	owner_contact = COALESCE(NULLIF(u.owner_contact, ''), d.owner_contact),
	import_id = $6::uuid, import_line = u.line
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[]) AS u(serial, model, firmware, owner_contact, line)
WHERE d.serial = u.serial AND d.hold_reason IS NULL
RETURNING d.serial`

// stageSource feeds a batch to CopyFrom without building a [][]any.
type stageSource struct {
	rows []server.ImportDevice
	i    int
	vals [7]any
}

func (s *stageSource) Next() bool { s.i++; return s.i <= len(s.rows) }
func (s *stageSource) Err() error { return nil }
func (s *stageSource) Values() ([]any, error) {
	r := &s.rows[s.i-1]
	s.vals = [7]any{int32(r.Line), r.Serial, r.DeviceID, r.Model, r.ProductionDate, r.Firmware, r.OwnerContact}
	return s.vals[:], nil
}

// conflict is a staged row that was not inserted and may not be
// unchanged, with what the import does with it.
type conflict struct {
	row     server.ImportDevice
	verdict server.ImportVerdict
}

func mergeBatch(ctx context.Context, tx pgx.Tx, a server.Actor, importID string, rows []server.ImportDevice, keyGen int, update, optimistic bool, rep *server.ImportReport) error {
	// The staging table has no statistics, and with them the planner
	// still prefers hashing the whole registry to probing its indexes once
	// per staged row: a seq scan of devices per batch, 350 ms a batch at a
	// million devices and growing. Probing is what a batch needs.
	setup := stageSQL + `;
		SET LOCAL enable_hashjoin = off;
		SET LOCAL enable_mergejoin = off;
		SELECT pg_advisory_xact_lock(` + fmt.Sprint(importLock) + `)`
	if _, err := tx.Exec(ctx, setup); err != nil {
		return err
	}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{"import_stage"}, stageColumns, &stageSource{rows: rows})
	if err != nil {
		return err
	}
	if int(n) != len(rows) {
		return fmt.Errorf("postgres: staged %d rows of %d", n, len(rows))
	}
	if optimistic {
		// A fresh list probably has no row registered yet: insert without
		// probing the registry's two unique indexes first (a fifth of the
		// merge's cost), under a savepoint; a unique violation rolls it
		// back and the batch takes the probing path.
		if _, err := tx.Exec(ctx, "SAVEPOINT import_optimistic"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, optimisticSQL, keyGen, importID)
		var pe *pgconn.PgError
		switch {
		case err == nil:
			rep.Inserted = len(rows)
			return nil
		case errors.As(err, &pe) && pe.Code == "23505":
			if _, err := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT import_optimistic"); err != nil {
				return err
			}
		default:
			return err
		}
	}
	tag, err := tx.Exec(ctx, insertSQL, keyGen, importID)
	if err != nil {
		return err
	}
	rep.Inserted = int(tag.RowsAffected())
	var judged []conflict
	if rep.Inserted < len(rows) {
		res, err := tx.Query(ctx, classifySQL, update, importID)
		if err != nil {
			return err
		}
		for res.Next() {
			var (
				c conflict
				m server.ImportMatch
				r = &c.row
			)
			if err := res.Scan(&r.Line, &r.Serial, &r.DeviceID, &r.Model, &r.Firmware, &r.OwnerContact,
				&m.Found, &m.Registered.Model, &m.Registered.Firmware, &m.Registered.OwnerContact, &m.Registered.Held,
				&m.OtherSerial, &m.Line); err != nil {
				res.Close()
				return err
			}
			if !m.Found && m.OtherSerial == "" {
				// Neither its serial nor its device id registered, and yet
				// not inserted.
				res.Close()
				return errRaced
			}
			c.verdict = server.JudgeImportMatch(m, c.row, update)
			judged = append(judged, c)
		}
		if err := res.Err(); err != nil {
			return err
		}
	}
	updated, err := writeUpdates(ctx, tx, importID, judged)
	if err != nil {
		return err
	}
	for _, c := range judged {
		v, serial := c.verdict, c.row.Serial
		switch {
		case v.Duplicate != "":
			rep.Duplicates++
			rep.AddError(server.RowError{Line: c.row.Line, Serial: serial, Kind: server.RowDuplicate, Reason: v.Duplicate})
			continue
		case updated[serial]:
			rep.Updated++
			// Overwriting a registered device (its owner contact above all)
			// is audited per device, so that `audit query --serial` shows it.
			e := event(a, server.ActionImportUpdate, server.OutcomeSuccess, serial)
			e.RequestID, e.Detail = importID, v.Detail
			if err := insertEvent(ctx, tx, e); err != nil {
				return err
			}
			if v.ContactChange {
				e := event(a, server.ActionContactChange, server.OutcomeSuccess, serial)
				e.RequestID, e.Detail = importID, v.ContactDetail
				if err := insertEvent(ctx, tx, e); err != nil {
					return err
				}
			}
			continue
		case v.Write:
			v.Conflict = "not updated: the device was put on hold meanwhile"
		}
		if v.Detail != "" {
			// A contact that differs and was left alone: for auditors.
			e := event(a, server.ActionImportUpdate, server.OutcomeRefused, serial)
			e.RequestID, e.Detail = importID, v.Detail
			if err := insertEvent(ctx, tx, e); err != nil {
				return err
			}
		}
		if v.Conflict == "" {
			rep.Unchanged++
			continue
		}
		rep.Conflicts++
		rep.AddError(server.RowError{Line: c.row.Line, Serial: serial, Kind: server.RowConflict, Reason: v.Conflict})
	}
	rep.Unchanged += len(rows) - rep.Inserted - len(judged)
	return nil
}

// writeUpdates runs updateSQL for the rows judged to be written by import
// importID and returns the serials it wrote (a device put on hold
// meanwhile is not).
func writeUpdates(ctx context.Context, tx pgx.Tx, importID string, judged []conflict) (map[string]bool, error) {
	updated := map[string]bool{}
	var s, m, f, o []string
	var l []int32
	for _, c := range judged {
		if r := c.row; c.verdict.Write {
			s, m, f, o, l = append(s, r.Serial), append(m, r.Model), append(f, r.Firmware), append(o, r.OwnerContact), append(l, int32(r.Line))
		}
	}
	if len(s) == 0 {
		return updated, nil
	}
	ur, err := tx.Query(ctx, updateSQL, s, m, f, o, l, importID)
	if err != nil {
		return nil, err
	}
	got, err := pgx.CollectRows(ur, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, s := range got {
		updated[s] = true
	}
	return updated, nil
}

// FinishImport writes import importID's one audit event (ActionImport,
// request id = the import id, detail = its counts and sha256) and marks it
// finished, in one transaction; it returns the counts summed over the
// committed batches. Only the actor who began it may finish it, once.
func (db *DB) FinishImport(ctx context.Context, a server.Actor, importID, sha256 string, check func(server.ImportState) *server.Error) (server.ImportReport, error) {
	rep := server.ImportReport{ImportID: importID, SHA256: sha256}
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		var (
			st     server.ImportState
			update bool
		)
		err := tx.QueryRow(ctx, `SELECT actor, update_conflicting, finished_at IS NOT NULL FROM device_imports WHERE id = $1 FOR UPDATE`,
			importID).Scan(&st.Actor, &update, &st.Finished)
		if errors.Is(err, pgx.ErrNoRows) {
			return server.Errorf(server.ENotFound, "no import %s", clip.Quote(importID, 80))
		}
		if err != nil {
			return err
		}
		if e := check(st); e != nil {
			return e
		}
		err = tx.QueryRow(ctx, `SELECT count(*), COALESCE(sum(received), 0), COALESCE(sum(inserted), 0), COALESCE(sum(updated), 0),
				COALESCE(sum(unchanged), 0), COALESCE(sum(conflicts), 0), COALESCE(sum(duplicates), 0), COALESCE(sum(invalid), 0)
			FROM device_import_batches WHERE import_id = $1`, importID).
			Scan(&rep.Batches, &rep.Received, &rep.Inserted, &rep.Updated, &rep.Unchanged, &rep.Conflicts, &rep.Duplicates, &rep.Invalid)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE device_imports SET finished_at = now(), sha256 = $2 WHERE id = $1`, importID, sha256); err != nil {
			return err
		}
		e := event(a, server.ActionImport, server.OutcomeSuccess, "")
		e.RequestID = importID
		e.Detail = fmt.Sprintf("sha256=%s %s update=%t", sha256, rep.Summary(), update)
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return server.ImportReport{}, translate(err, "finishing an import")
	}
	return rep, nil
}
