package postgres

import (
	"context"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/agent/serial"
	"github.com/dvrhotline/hotline/agent/voicecode"
	"github.com/dvrhotline/hotline/server"
)

// Models lists the model catalogue, smallest first.
func (db *DB) Models(ctx context.Context) ([]server.Model, error) {
	rows, err := db.pool.Query(ctx, `SELECT model, channels, drives, ships_with_drive, description
		FROM models ORDER BY channels, ships_with_drive DESC, model`)
	if err != nil {
		return nil, translate(err, "listing models")
	}
	ms, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.Model, error) {
		var m server.Model
		err := r.Scan(&m.Code, &m.Channels, &m.Drives, &m.ShipsWithDrive, &m.Description)
		return m, err
	})
	if err != nil {
		return nil, translate(err, "listing models")
	}
	return ms, nil
}

// RegisterDevice adds d to the registry, audited as ActionRegister. The
// serial must be canonical; DeviceID and ProductionDate default to the
// serial's fields and must match them when given; KeyGeneration defaults to
// 1. An unknown model is EInvalid (field "model"), a registered serial or
// device id EConflict; both refusals are audited.
func (db *DB) RegisterDevice(ctx context.Context, a server.Actor, d server.Device) error {
	s, err := serial.Parse(d.Serial)
	if err != nil || s.String() != d.Serial {
		return server.Invalid("serial", "expected a canonical serial like JZ6OES#2017-08-01#3#DVR1101134C08011, got %q", d.Serial)
	}
	if d.DeviceID == "" {
		d.DeviceID = s.DeviceID
	}
	if d.ProductionDate.IsZero() {
		d.ProductionDate = s.Date
	}
	if d.KeyGeneration == 0 {
		d.KeyGeneration = 1
	}
	var refusal error
	err = pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		e := event(a, server.ActionRegister, server.OutcomeSuccess, d.Serial)
		e.Detail = "model=" + d.Model
		// A savepoint, so that a refused insert can still be audited and
		// committed in this transaction.
		ierr := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
			_, err := sp.Exec(ctx, `INSERT INTO devices
				(serial, device_id, model, production_date, firmware, owner_contact, key_generation, registered_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now()))`,
				d.Serial, d.DeviceID, d.Model, pgDate(d.ProductionDate), d.Firmware, d.OwnerContact, d.KeyGeneration, nullTime(d.RegisteredAt))
			return err
		})
		if ierr != nil {
			refusal = translate(ierr, "registering a device")
			code := server.ErrorCode(refusal)
			if code == server.EInternal || code == server.EUnavailable {
				return refusal
			}
			e.Outcome = server.OutcomeRefused
			e.Detail = string(code) + " " + e.Detail
		}
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return translate(err, "registering a device")
	}
	return refusal
}

// deviceColumns are what scanDevice reads.
const deviceColumns = `serial, device_id, model, production_date, firmware, owner_contact,
	key_generation, hold_reason, hold_by, hold_since, registered_at,
	COALESCE(import_id::text, '') AS import_id, COALESCE(import_line, 0) AS import_line,
	(SELECT count(*) FROM issuances i WHERE i.serial = devices.serial
		AND i.issued_at > clock_timestamp() - interval '24 hours')`

func scanDevice(row pgx.Row) (server.Device, error) {
	var (
		d          server.Device
		reason, by *string
		since      *time.Time
	)
	err := row.Scan(&d.Serial, &d.DeviceID, &d.Model, &d.ProductionDate, &d.Firmware, &d.OwnerContact,
		&d.KeyGeneration, &reason, &by, &since, &d.RegisteredAt, &d.ImportID, &d.ImportLine, &d.RecentIssuances)
	if err == nil {
		d.Hold = holdOf(reason, by, since)
	}
	d.RegisteredAt = d.RegisteredAt.UTC()
	return d, err
}

// lookupSQL reads one device and audits the lookup in one statement (one
// implicit transaction): the event's outcome says whether it was found.
// %s is the column looked up by.
const lookupSQL = `WITH d AS (
	SELECT ` + deviceColumns + ` FROM devices WHERE %s = $1
), e AS (
	INSERT INTO audit_events (actor, role, client_addr, action, outcome, serial, detail)
	SELECT $2::text, $3::text, NULLIF($4::text, ''), 'device.lookup',
		CASE WHEN EXISTS (SELECT FROM d) THEN 'success' ELSE 'refused' END,
		COALESCE((SELECT serial FROM d), NULLIF($5::text, '')),
		CASE WHEN EXISTS (SELECT FROM d) THEN $6::text ELSE 'not_found ' || $6::text END
)
SELECT * FROM d`

var (
	lookupBySerialSQL   = strings.Replace(lookupSQL, "%s", "serial", 1)
	lookupByDeviceIDSQL = strings.Replace(lookupSQL, "%s", "device_id", 1)
)

// LookupDevice returns the device with the canonical serial s, audited as
// ActionLookup. An unknown serial is ENotFound with up to five near
// matches, and audited as refused.
func (db *DB) LookupDevice(ctx context.Context, a server.Actor, s string) (server.Device, error) {
	return db.lookup(ctx, a, lookupBySerialSQL, s, s, "by=serial")
}

// LookupDeviceID returns the device whose serial ends in deviceID, audited
// like LookupDevice.
func (db *DB) LookupDeviceID(ctx context.Context, a server.Actor, deviceID string) (server.Device, error) {
	return db.lookup(ctx, a, lookupByDeviceIDSQL, deviceID, "", "by=device_id query="+clip.Quote(deviceID, 80))
}

func (db *DB) lookup(ctx context.Context, a server.Actor, q, key, auditSerial, detail string) (server.Device, error) {
	d, err := scanDevice(db.pool.QueryRow(ctx, q, key, a.Subject, string(a.Role), a.ClientAddr, auditSerial, detail))
	if err == pgx.ErrNoRows {
		near, nerr := db.NearMatches(ctx, key, 5)
		if nerr != nil {
			return server.Device{}, nerr
		}
		return server.Device{}, &server.Error{Code: server.ENotFound, Reason: server.ReasonDeviceNotFound, Field: "serial",
			Message: "no device is registered under " + clip.Quote(key, 80), NearMatches: near, Err: err}
	}
	if err != nil {
		return server.Device{}, translate(err, "looking a device up")
	}
	return d, nil
}

// SetHold places a hold on the device (h non-nil; it replaces any hold
// already placed) or releases it (h nil; releasing a device not on hold
// succeeds and says so in the event). h.By defaults to the actor, h.Since
// to the database clock. Whether a may do this is the service layer's
// decision. Audited as ActionHold or ActionRelease.
func (db *DB) SetHold(ctx context.Context, a server.Actor, s string, h *server.Hold, releaseReason string) error {
	action := server.ActionRelease
	if h != nil {
		action = server.ActionHold
	}
	var refusal error
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		e := event(a, action, server.OutcomeSuccess, s)
		var held bool
		err := tx.QueryRow(ctx, `SELECT hold_reason IS NOT NULL FROM devices WHERE serial = $1 FOR UPDATE`, s).Scan(&held)
		if err == pgx.ErrNoRows {
			refusal = deviceNotFound(s)
			e.Outcome, e.Detail = server.OutcomeRefused, "not_found"
			return insertEvent(ctx, tx, e)
		}
		if err != nil {
			return err
		}
		if h == nil {
			e.Reason = releaseReason
			if !held {
				e.Detail = "not_on_hold"
			}
			_, err = tx.Exec(ctx, `UPDATE devices SET hold_reason = NULL, hold_by = NULL, hold_since = NULL WHERE serial = $1`, s)
		} else {
			by := h.By
			if by == "" {
				by = a.Subject
			}
			e.Reason = h.Reason
			if held {
				e.Detail = "replaced"
			}
			_, err = tx.Exec(ctx, `UPDATE devices SET hold_reason = $2, hold_by = $3, hold_since = COALESCE($4, clock_timestamp())
				WHERE serial = $1`, s, h.Reason, by, nullTime(h.Since))
		}
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return translate(err, "changing a hold")
	}
	return refusal
}

// issuanceColumns are what scanIssuance reads.
const issuanceColumns = `id::text, request_id, serial, sequence, key_generation, signing_kid,
	issued_at, expires_at, actor, actor_role, ticket, method, method_note, override_reason, request_nonce, proof`

func scanIssuance(row pgx.Row) (server.Issuance, error) {
	var (
		iss    server.Issuance
		role   string
		method int16
		nonce  *int64
		mac    []byte
	)
	err := row.Scan(&iss.ID, &iss.RequestID, &iss.Serial, &iss.Sequence, &iss.KeyGeneration, &iss.SigningKeyID,
		&iss.IssuedAt, &iss.ExpiresAt, &iss.Actor, &role, &iss.Ticket, &method, &iss.MethodNote, &iss.OverrideReason, &nonce, &mac)
	if nonce != nil {
		iss.RequestCode = voicecode.FormatRequestCode(uint64(*nonce))
	}
	if len(mac) == len(iss.MAC) { // NULL (no proof) stays all zero
		iss.MAC = [server.IssuanceMACSize]byte(mac)
	}
	iss.ActorRole, iss.Method = server.Role(role), server.VerificationMethod(method)
	iss.IssuedAt, iss.ExpiresAt = iss.IssuedAt.UTC(), iss.ExpiresAt.UTC()
	return iss, err
}

// Issuances lists the device's issuances, newest first by sequence (unique
// per device), at most limit (0 means server.DefaultIssuancesPage; the
// service clamps it to server.MaxIssuancesPage, plus one), those with a
// sequence below before when before is not 0: the keyset cursor of the
// next page. Audited as ActionListIssuances; an unknown device is
// ENotFound.
func (db *DB) Issuances(ctx context.Context, a server.Actor, s string, before int64, limit int) ([]server.Issuance, error) {
	if limit <= 0 {
		limit = server.DefaultIssuancesPage
	}
	if before <= 0 {
		before = math.MaxInt64
	}
	var (
		out     []server.Issuance
		refusal error
	)
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		e := event(a, server.ActionListIssuances, server.OutcomeSuccess, s)
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM devices WHERE serial = $1)`, s).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			refusal = deviceNotFound(s)
			e.Outcome, e.Detail = server.OutcomeRefused, "not_found"
			return insertEvent(ctx, tx, e)
		}
		rows, err := tx.Query(ctx, `SELECT `+issuanceColumns+` FROM issuances WHERE serial = $1 AND sequence < $2
			ORDER BY sequence DESC LIMIT $3`, s, before, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.Issuance, error) { return scanIssuance(r) })
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, e)
	})
	if err != nil {
		return nil, translate(err, "listing issuances")
	}
	return out, refusal
}

// nullTime is NULL for the zero time, so that COALESCE picks the database clock.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// pgDate is t's calendar date, independent of t's location.
func pgDate(t time.Time) string { return t.Format("2006-01-02") }

// deviceNotFound is the refusal of an act on a serial no device is
// registered under.
func deviceNotFound(s string) *server.Error {
	return &server.Error{Code: server.ENotFound, Reason: server.ReasonDeviceNotFound,
		Message: "no device is registered under " + clip.Quote(s, 80)}
}

// holdOf is the hold of a device row's hold columns, nil when it is not on
// hold.
func holdOf(reason, by *string, since *time.Time) *server.Hold {
	if reason == nil {
		return nil
	}
	h := &server.Hold{Reason: *reason}
	if by != nil {
		h.By = *by
	}
	if since != nil {
		h.Since = since.UTC()
	}
	return h
}
