package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ProblemKind names what is wrong with the log. The values are shown to
// auditors and scripts: append only.
type ProblemKind string

// The problem kinds (see the package documentation).
const (
	ProblemChanged    ProblemKind = "changed"
	ProblemReordered  ProblemKind = "reordered"
	ProblemRemoved    ProblemKind = "removed"
	ProblemInserted   ProblemKind = "inserted"
	ProblemCheckpoint ProblemKind = "checkpoint"
	ProblemUnsigned   ProblemKind = "unsigned"
	ProblemTruncated  ProblemKind = "truncated"
	ProblemRewritten  ProblemKind = "rewritten"
	// ProblemStale: events have waited longer than the grace period for a
	// seal, newer than every sealed one: no sealer is running, so they are
	// not yet protected.
	ProblemStale ProblemKind = "stale"
	// ProblemFuture: an event is dated after the database's clock (or
	// after the checkpoint that sealed it): its time was forged.
	ProblemFuture ProblemKind = "future"
	// ProblemUnaudited: an issuance has no recovery.issue success event
	// with its id, serial, actor and sequence: it was written outside the
	// service.
	ProblemUnaudited ProblemKind = "unaudited"
)

// MaxProblems bounds the problems one Verify reports.
const MaxProblems = 100

// Problem is one thing Verify found wrong.
type Problem struct {
	Kind ProblemKind
	// Seq is the seal (chain position) concerned, 0 if none.
	Seq int64
	// EventID is the audit event concerned, 0 if none.
	EventID int64
	// Message is a sentence for the auditor.
	Message string
}

// Error implements error: a Problem is why a verification failed.
func (p *Problem) Error() string {
	where := ""
	if p.Seq != 0 {
		where += fmt.Sprintf(" at seq %d", p.Seq)
	}
	if p.EventID != 0 {
		where += fmt.Sprintf(" (event %d)", p.EventID)
	}
	return fmt.Sprintf("audit log %s%s: %s", p.Kind, where, p.Message)
}

// Report is the outcome of Verify.
type Report struct {
	// Events is the number of rows in audit_events.
	Events int64
	// Sealed is the number of seals (the chain's length).
	Sealed int64
	// Unsealed is the number of events no seal links (yet).
	Unsealed int64
	// Checkpoints is the number of stored checkpoints whose signature and
	// head verified; External is whether the external checkpoint did.
	Checkpoints int
	External    bool
	// Head is the recomputed head h_Sealed.
	Head Hash
	// FirstProblem is nil when the log verified; otherwise Problems[0].
	FirstProblem *Problem
	// Problems is every problem found, in the order found, at most
	// MaxProblems; Truncated is true when more were found.
	Problems  []*Problem
	Truncated bool
	// Published is true when the witness's last checkpoint (WithPublished)
	// matched the chain.
	Published bool
	// Elapsed is how long the verification took.
	Elapsed time.Duration
}

// Err returns FirstProblem as an error, nil when the log verified.
func (r *Report) Err() error {
	if r.FirstProblem == nil {
		return nil
	}
	return r.FirstProblem
}

// Option adjusts Verify.
type Option func(*verifier)

// WithGrace sets the grace period (DefaultGrace otherwise): how long after
// its time an event may still be unsealed, or be sealed after events that
// happened later, without being reported as inserted.
func WithGrace(d time.Duration) Option { return func(v *verifier) { v.grace = d } }

// WithPublished also checks the chain against c, the last checkpoint a
// Witness kept (its signature is checked like an external checkpoint's).
func WithPublished(c Checkpoint) Option { return func(v *verifier) { v.published = &c } }

type verifier struct {
	grace     time.Duration
	trusted   map[string]ed25519.PublicKey
	external  *Checkpoint
	published *Checkpoint
	report    Report
}

// problem records a problem, up to MaxProblems, and returns it (nil past
// the cap).
func (v *verifier) problem(kind ProblemKind, seq, eventID int64, format string, args ...any) *Problem {
	r := &v.report
	if len(r.Problems) >= MaxProblems {
		r.Truncated = true
		return nil
	}
	p := &Problem{Kind: kind, Seq: seq, EventID: eventID, Message: fmt.Sprintf(format, args...)}
	r.Problems = append(r.Problems, p)
	if r.FirstProblem == nil {
		r.FirstProblem = p
	}
	return p
}

// storedCheckpoint is a checkpoint row and whether its signature verified.
type storedCheckpoint struct {
	Checkpoint
	sigErr error
}

// The verifier's statements; all run in one read-only REPEATABLE READ
// transaction, so seals, checkpoints and events are one consistent state.
const (
	verifyCheckpointsSQL = `SELECT size, head, at, kid, signature FROM audit_checkpoints ORDER BY size`
	verifyChainSQL       = `SELECT s.seq, s.event_id, s.hash, ` + eventColumns + `
		FROM audit_seals s LEFT JOIN audit_events e ON e.id = s.event_id ORDER BY s.seq`
	verifyCountSQL = `SELECT count(*) FROM audit_events`
	// The first unsealed event older than $2 before $1 (the database clock
	// when $1 is NULL).
	verifyUnsealedSQL = `SELECT e.id, e.at FROM audit_events e
		WHERE e.at < COALESCE($1::timestamptz, now()) - $2::interval
			AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)
		ORDER BY e.id LIMIT 1`
	verifySealsSQL = `SELECT seq, event_id, hash FROM audit_seals ORDER BY seq`
	// Unsealed events dated more than $2 after the database clock.
	verifyFutureSQL = `SELECT e.id, e.at FROM audit_events e
		WHERE e.at > now() + $2::interval AND NOT EXISTS (SELECT 1 FROM audit_seals s WHERE s.event_id = e.id)
		ORDER BY e.id LIMIT $1`
	// Issuances without their success event (same id, serial, actor and
	// sequence, the detail's first word "seq=N").
	verifyIssuancesSQL = `SELECT i.id::text, i.serial, i.sequence, i.actor FROM issuances i
		WHERE NOT EXISTS (SELECT 1 FROM audit_events e WHERE e.issuance_id = i.id
			AND e.action = 'recovery.issue' AND e.outcome = 'success' AND e.serial = i.serial AND e.actor = i.actor
			AND split_part(e.detail, ' ', 1) = 'seq=' || i.sequence)
		ORDER BY i.issued_at, i.id LIMIT $1`
	// verifyPlanSQL makes the chain walk a nested loop: seals in seq order
	// from their primary key, each event fetched by its id. Rows then flow
	// from the first one, so PostgreSQL reads while Go hashes, in constant
	// memory; the planner's own choice (hash join, then sorting the whole
	// log by seq, spilling to disk) was 25% slower at a million events.
	verifyPlanSQL = `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
		SET LOCAL max_parallel_workers_per_gather = 0`
)

// Verify recomputes the audit chain from the events in db and checks every
// stored checkpoint against the trusted audit public keys (by kid) and the
// recomputed chain, and, when external is not nil, that checkpoint too
// (its signature first: an external checkpoint that does not verify is an
// error, not a finding). The report names the first problem; the error is
// for failures to verify at all.
func Verify(ctx context.Context, db DB, trusted map[string]ed25519.PublicKey, external *Checkpoint, opts ...Option) (Report, error) {
	start := time.Now()
	v := &verifier{grace: DefaultGrace, trusted: trusted, external: external}
	for _, o := range opts {
		o(v)
	}
	if external != nil {
		if err := external.Verify(trusted); err != nil {
			return Report{}, fmt.Errorf("audit: the external checkpoint: %w", err)
		}
	}
	if v.published != nil {
		if err := v.published.Verify(trusted); err != nil {
			return Report{}, fmt.Errorf("audit: the witness's checkpoint: %w", err)
		}
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, verifyPlanSQL); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	if err := v.run(ctx, tx); err != nil {
		return Report{}, fmt.Errorf("audit: verify: %w", err)
	}
	v.report.Elapsed = time.Since(start)
	return v.report, nil
}

func (v *verifier) run(ctx context.Context, tx pgx.Tx) error {
	cps, err := v.checkpoints(ctx, tx)
	if err != nil {
		return err
	}
	chain, err := v.chain(ctx, tx, cps)
	if err != nil {
		return err
	}
	r := &v.report
	n := r.Sealed
	// What lies beyond the chain's end.
	for _, c := range cps {
		if c.Size > n {
			v.problem(ProblemTruncated, c.Size, 0,
				"a checkpoint signed at %s covers %d seals but the chain has only %d: the tail was removed",
				c.Time.Format(checkpointTime), c.Size, n)
		}
	}
	if v.external != nil && v.external.Size > n {
		v.problem(ProblemTruncated, v.external.Size, 0,
			"the external checkpoint of %s covers %d seals but the chain has only %d: the tail was removed",
			v.external.Time.Format(checkpointTime), v.external.Size, n)
	}
	if w := v.published; w != nil && w.Size > n {
		v.problem(ProblemTruncated, w.Size, 0,
			"the witness's checkpoint of %s covers %d seals but the chain has only %d: the tail was removed (with its stored checkpoints)",
			w.Time.Format(checkpointTime), w.Size, n)
	}
	var signed int64
	if len(cps) > 0 {
		signed = cps[len(cps)-1].Size
	}
	if n > signed {
		if signed+1 == n {
			v.problem(ProblemUnsigned, n, 0,
				"seal %d is covered by no signed checkpoint (the sealer signs one with every batch): it was added or rewritten outside the sealer", n)
		} else {
			v.problem(ProblemUnsigned, signed+1, 0,
				"seals %d to %d are covered by no signed checkpoint (the sealer signs one with every batch): they were added or rewritten outside the sealer",
				signed+1, n)
		}
	}
	// Events no seal links.
	if err := tx.QueryRow(ctx, verifyCountSQL).Scan(&r.Events); err != nil {
		return err
	}
	r.Unsealed = r.Events - chain.present
	if r.Unsealed > 0 && chain.maxAt != minMicros {
		latest := pgTime(chain.maxAt)
		if err := v.unsealed(ctx, tx, &latest, func(id int64, at time.Time) {
			v.problem(ProblemInserted, 0, id,
				"event %d of %s is not sealed although events of more than %s later are: it was inserted after the fact",
				id, at.UTC().Format(checkpointTime), v.grace)
		}); err != nil {
			return err
		}
	}
	if r.Unsealed > 0 {
		if err := v.rows(ctx, tx, verifyFutureSQL, func(id int64, at time.Time) {
			v.problem(ProblemFuture, 0, id,
				"event %d is dated %s, after the database's clock: its time was forged (the sealer leaves it unsealed until then)",
				id, at.UTC().Format(checkpointTime))
		}, MaxProblems, MaxClockSkew); err != nil {
			return err
		}
	}
	if err := v.issuances(ctx, tx); err != nil {
		return err
	}
	// Events that no sealer picked up although they are old (by the
	// database clock): the log is not being sealed, so they are not yet
	// protected. Reported only when nothing worse was found.
	if r.Unsealed > 0 && r.FirstProblem == nil {
		found := false
		if err := v.unsealed(ctx, tx, nil, func(id int64, at time.Time) {
			if !found {
				found = true
				v.problem(ProblemStale, 0, id,
					"event %d of %s has waited more than %s for its seal: no sealer is running (are the servers up, with the audit key?)",
					id, at.UTC().Format(checkpointTime), v.grace)
			}
		}); err != nil {
			return err
		}
	}
	if chain.changed != nil {
		return v.diagnose(ctx, tx, chain.changed, chain.badLeaf)
	}
	return nil
}

// unsealed calls fn with the unsealed events older than the grace period
// before latest (before the database clock when latest is nil), in id
// order, as many as may still be reported.
func (v *verifier) unsealed(ctx context.Context, tx pgx.Tx, latest *time.Time, fn func(id int64, at time.Time)) error {
	q := strings.Replace(verifyUnsealedSQL, "LIMIT 1", "LIMIT $3", 1)
	return v.rows(ctx, tx, q, fn, latest, v.grace, MaxProblems-len(v.report.Problems)+1)
}

// rows runs q, which returns (id, at) rows, calling fn with each.
func (v *verifier) rows(ctx context.Context, tx pgx.Tx, q string, fn func(id int64, at time.Time), args ...any) error {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id int64
			at time.Time
		)
		if err := rows.Scan(&id, &at); err != nil {
			return err
		}
		fn(id, at)
	}
	return rows.Err()
}

// issuances reports the issuances that have no success event of their
// own: rows written into issuances outside the service.
func (v *verifier) issuances(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, verifyIssuancesSQL, MaxProblems-len(v.report.Problems)+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, serial, actor string
			seq               int64
		)
		if err := rows.Scan(&id, &serial, &seq, &actor); err != nil {
			return err
		}
		v.problem(ProblemUnaudited, 0, 0,
			"issuance %s (serial %s, sequence %d, actor %s) has no recovery.issue success event with the same id, serial, actor and sequence: it was written outside the service",
			id, serial, seq, actor)
	}
	return rows.Err()
}

// checkpoints reads the stored checkpoints and checks their signatures.
func (v *verifier) checkpoints(ctx context.Context, tx pgx.Tx) ([]storedCheckpoint, error) {
	rows, err := tx.Query(ctx, verifyCheckpointsSQL)
	if err != nil {
		return nil, err
	}
	var cps []storedCheckpoint
	for rows.Next() {
		var (
			c         storedCheckpoint
			head, sig []byte
		)
		if err := rows.Scan(&c.Size, &head, &c.Time, &c.KID, &sig); err != nil {
			rows.Close()
			return nil, err
		}
		copy(c.Head[:], head)
		c.Time, c.Signature = c.Time.UTC(), sig
		c.sigErr = c.Verify(v.trusted)
		cps = append(cps, c)
	}
	return cps, rows.Err()
}

const minMicros = -1 << 63

// chainState is what the chain walk leaves for the later checks.
type chainState struct {
	present int64    // seals whose event exists
	maxAt   int64    // the latest event time among sealed events (PostgreSQL micros)
	changed *Problem // the first hash mismatch
	badLeaf []byte   // 0x00 || encoding of the event there
}

// chain walks the seals in order, recomputing the chain, and checks each
// stored checkpoint (and the external one) at its size.
func (v *verifier) chain(ctx context.Context, tx pgx.Tx, cps []storedCheckpoint) (chainState, error) {
	st := chainState{maxAt: minMicros}
	r := &v.report
	rows, err := tx.Query(ctx, verifyChainSQL)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	var (
		lf    leafer
		h     Hash // the recomputed h_n
		n     int64
		ci    int // the next checkpoint to check
		grace = v.grace.Microseconds()
		skew  = MaxClockSkew.Microseconds()
	)
	for rows.Next() {
		vals := rows.RawValues()
		if n == 0 {
			if err := checkBinary(rows, vals); err != nil {
				return st, err
			}
		}
		seq := int64(binary.BigEndian.Uint64(vals[0]))
		sealedID := int64(binary.BigEndian.Uint64(vals[1]))
		stored := vals[2]
		ev := vals[3:]
		if seq != n+1 {
			if n+1 == seq-1 {
				v.problem(ProblemRemoved, n+1, 0, "seal %d is missing: the event sealed there was removed with its seal", n+1)
			} else {
				v.problem(ProblemRemoved, n+1, 0, "seals %d to %d are missing: the events sealed there were removed with their seals", n+1, seq-1)
			}
		}
		n = seq
		if ev[colID] == nil {
			v.problem(ProblemRemoved, seq, sealedID, "event %d, sealed at seq %d, is missing: it was deleted", sealedID, seq)
			copy(h[:], stored) // carry on from the stored chain
		} else {
			st.present++
			leaf := lf.leaf(ev)
			h = Next(h, leaf, seq)
			if string(h[:]) != string(stored) {
				p := v.problem(ProblemChanged, seq, sealedID,
					"event %d differs from what was sealed at seq %d: a field was changed", sealedID, seq)
				if st.changed == nil && p != nil {
					st.changed, st.badLeaf = p, append([]byte(nil), lf.buf...)
				}
				copy(h[:], stored)
			}
			at := int64(binary.BigEndian.Uint64(ev[colAt]))
			// The checkpoint that covers this seal was signed when it was
			// sealed: an event dated after it could not have been seen.
			if ci < len(cps) && cps[ci].sigErr == nil && at > cps[ci].Time.UnixMicro()-pgEpochMicros+skew {
				v.problem(ProblemFuture, seq, sealedID,
					"event %d is dated %s but was sealed by the checkpoint of %s: its time was forged",
					sealedID, pgTime(at).Format(checkpointTime), cps[ci].Time.Format(checkpointTime))
			} else {
				if st.maxAt != minMicros && at < st.maxAt-grace {
					v.problem(ProblemInserted, seq, sealedID,
						"event %d (%s) was sealed after events of more than %s later: it was inserted after the fact",
						sealedID, pgTime(at).Format(checkpointTime), v.grace)
				}
				st.maxAt = max(st.maxAt, at)
			}
		}
		for ; ci < len(cps) && cps[ci].Size <= seq; ci++ {
			c := &cps[ci]
			switch {
			case c.Size < seq:
				// Its size fell in a gap; the gap is reported already.
			case c.sigErr != nil:
				v.problem(ProblemCheckpoint, seq, 0, "the checkpoint at size %d of %s: %v", c.Size, c.Time.Format(checkpointTime), c.sigErr)
			case c.Head != h:
				v.problem(ProblemCheckpoint, seq, 0,
					"the signed checkpoint at size %d of %s has head %s but the chain's head there is %s: history before it was rewritten",
					c.Size, c.Time.Format(checkpointTime), c.Head, h)
			default:
				r.Checkpoints++
			}
		}
		if x := v.external; x != nil && x.Size == seq {
			if x.Head != h {
				v.problem(ProblemRewritten, seq, 0,
					"the external checkpoint of %s has head %s at size %d but the chain's head there is %s: history before it was rewritten",
					x.Time.Format(checkpointTime), x.Head, seq, h)
			} else {
				r.External = true
			}
		}
		if w := v.published; w != nil && w.Size == seq {
			if w.Head != h {
				v.problem(ProblemRewritten, seq, 0,
					"the witness's checkpoint of %s has head %s at size %d but the chain's head there is %s: history before it was rewritten",
					w.Time.Format(checkpointTime), w.Head, seq, h)
			} else {
				r.Published = true
			}
		}
	}
	if err := rows.Err(); err != nil {
		return st, err
	}
	r.Sealed, r.Head = n, h
	return st, nil
}

// idOffset is where the id's value starts in 0x00 || encoding: after the
// prefix, the version, the presence byte and the length.
const idOffset = 1 + 1 + 1 + 4

// diagnose tells a swap from a change: if the event at the first mismatch
// carries the content that was sealed at another position (with its own
// id or with that position's), the events were reordered or their
// contents swapped. It costs a pass over the seals, on failure only.
func (v *verifier) diagnose(ctx context.Context, tx pgx.Tx, p *Problem, enc []byte) error {
	rows, err := tx.Query(ctx, verifySealsSQL)
	if err != nil {
		return err
	}
	defer rows.Close()
	leaf := sha256.Sum256(enc)
	moved := append([]byte(nil), enc...)
	var prev Hash
	for rows.Next() {
		vals := rows.RawValues()
		seq := int64(binary.BigEndian.Uint64(vals[0]))
		copy(moved[idOffset:], vals[1])
		if seq != p.Seq && len(vals[2]) == len(prev) &&
			(Next(prev, leaf, seq) == Hash(vals[2]) || Next(prev, sha256.Sum256(moved), seq) == Hash(vals[2])) {
			other := int64(binary.BigEndian.Uint64(vals[1]))
			p.Kind = ProblemReordered
			p.Message = fmt.Sprintf("event %d carries the content sealed at seq %d for event %d: the events were swapped or reordered",
				p.EventID, seq, other)
			return nil
		}
		copy(prev[:], vals[2])
	}
	return rows.Err()
}

// pgTime converts PostgreSQL microseconds to a time.
func pgTime(micros int64) time.Time { return time.UnixMicro(micros + pgEpochMicros).UTC() }
