package audit

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// The chain walk reads the seals chainChunk seqs at a time in seq order
	// (past a gap, from the next seq there is: a gap costs one statement),
	// then the events they link, by ranges of ids, and joins the two
	// itself. Each event is read once, off the primary key, where a join
	// in PostgreSQL costs an index descent per seal (the nested loop it
	// used to be: about four times the reading) or a sort of the log (a
	// hash or a merge join). The ranges' join condition allows one plan
	// only: a nested loop over them, a primary-key range scan each.
	verifyNextSealSQL  = `SELECT min(seq) FROM audit_seals WHERE seq >= $1`
	verifySealChunkSQL = `SELECT seq, event_id, hash FROM audit_seals WHERE seq BETWEEN $1 AND $2 ORDER BY seq`
	verifyEventsSQL    = `SELECT ` + eventColumns + ` FROM unnest($1::bigint[], $2::bigint[]) AS r (lo, hi)
		JOIN audit_events e ON e.id BETWEEN r.lo AND r.hi`
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
	// verifyPlanSQL keeps the other reads off hash joins and parallel
	// workers (the anti-joins probe audit_seals per event), and every
	// statement off JIT compilation, which the planner's estimate for the
	// events of many ranges on a big log (millions of rows) would buy for
	// each chunk, at tens of milliseconds a time, to read 50,000 rows.
	verifyPlanSQL = `SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;
		SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL jit = off`
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

// chainChunk is how many seqs of seals the chain walk reads per
// statement. A chunk holds its seals and their events' encodings, about
// 300 bytes per seal, and two are in memory at a time (about 30 MB). (A
// variable: the tests walk small logs in several chunks too.)
var chainChunk int64 = 50_000

// chainGap is the widest gap between two linked ids that one range of
// the events' read spans: ids never used (rolled-back inserts) cost at
// most that much reading; ids further apart get ranges of their own.
const chainGap = 16

// sealChunk is one chunk of the chain walk: the seals of chainChunk seqs,
// in seq order, and the events they link, by id. Its buffers are reused
// from chunk to chunk.
type sealChunk struct {
	seq, eventID []int64
	hashEnd      []int  // seal i's stored hash is hashes[hashEnd[i-1]:hashEnd[i]]
	hashes       []byte // as stored: a changed one need not be 32 bytes
	// The linked ids, sorted, without repeats, and for each its event:
	// encs[encFrom[i]:encTo[i]] is 0x00 || the encoding of event ids[i],
	// empty when there is no such event; at[i] its time; twice[i] whether
	// the id came twice (a row inserted with a sealed event's id).
	ids            []int64
	encFrom, encTo []int
	at             []int64
	twice          []bool
	encs           []byte
	lo, hi         []int64 // the ranges of ids read
}

// read reads the next chunk of seals from seq from on (every seal of the
// chainChunk seqs from from, or, past a gap, from the first seq there is)
// and their events, and returns the last of those seqs; ok is false when
// there is no seal from seq from on.
func (c *sealChunk) read(ctx context.Context, tx pgx.Tx, from int64) (last int64, ok bool, err error) {
	for gap := false; ; gap = true {
		last = math.MaxInt64
		if from <= math.MaxInt64-(chainChunk-1) {
			last = from + (chainChunk - 1)
		}
		if err := c.readSeals(ctx, tx, from, last); err != nil {
			return 0, false, err
		}
		if len(c.seq) > 0 || gap {
			break
		}
		// None there: seals were removed, or the chain ends.
		var next *int64
		if err := tx.QueryRow(ctx, verifyNextSealSQL, from).Scan(&next); err != nil || next == nil {
			return 0, false, err
		}
		from = *next
	}
	return last, true, c.readEvents(ctx, tx)
}

// readSeals reads the seals of the seqs lo to hi.
func (c *sealChunk) readSeals(ctx context.Context, tx pgx.Tx, lo, hi int64) error {
	c.seq, c.eventID, c.hashEnd, c.hashes = c.seq[:0], c.eventID[:0], c.hashEnd[:0], c.hashes[:0]
	rows, err := tx.Query(ctx, verifySealChunkSQL, lo, hi)
	if err != nil {
		return err
	}
	defer rows.Close()
	if fds := rows.FieldDescriptions(); fds[0].Format != pgx.BinaryFormatCode || fds[1].Format != pgx.BinaryFormatCode {
		return errors.New("audit: seq or event_id arrived in text format")
	}
	for rows.Next() {
		vals := rows.RawValues()
		if len(vals[0]) != 8 || len(vals[1]) != 8 {
			return errors.New("audit: unexpected seq or event_id encoding")
		}
		c.seq = append(c.seq, int64(binary.BigEndian.Uint64(vals[0])))
		c.eventID = append(c.eventID, int64(binary.BigEndian.Uint64(vals[1])))
		c.hashes = append(c.hashes, vals[2]...)
		c.hashEnd = append(c.hashEnd, len(c.hashes))
	}
	return rows.Err()
}

// readEvents reads the events the chunk's seals link, by ranges of ids,
// and keeps their encodings and times.
func (c *sealChunk) readEvents(ctx context.Context, tx pgx.Tx) error {
	c.ids = append(c.ids[:0], c.eventID...)
	slices.Sort(c.ids) // in seq order they are nearly sorted already
	c.ids = slices.Compact(c.ids)
	n := len(c.ids)
	c.encFrom, c.encTo = slices.Grow(c.encFrom[:0], n)[:n], slices.Grow(c.encTo[:0], n)[:n]
	c.at, c.twice = slices.Grow(c.at[:0], n)[:n], slices.Grow(c.twice[:0], n)[:n]
	clear(c.encFrom)
	clear(c.encTo)
	clear(c.twice)
	c.encs = c.encs[:0]
	c.lo, c.hi = c.lo[:0], c.hi[:0]
	for i, id := range c.ids {
		if i > 0 && uint64(id)-uint64(c.hi[len(c.hi)-1]) <= chainGap { // no overflow: id > the previous
			c.hi[len(c.hi)-1] = id
			continue
		}
		c.lo, c.hi = append(c.lo, id), append(c.hi, id)
	}
	if n == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, verifyEventsSQL, c.lo, c.hi)
	if err != nil {
		return err
	}
	defer rows.Close()
	next, checked := 0, false // the events come in id order: where the next one is, most likely
	for rows.Next() {
		vals := rows.RawValues()
		if !checked {
			if err := checkBinary(rows, vals); err != nil {
				return err
			}
			checked = true
		}
		if len(vals[colID]) != 8 || len(vals[colAt]) != 8 {
			return errors.New("audit: unexpected id or time encoding")
		}
		i, ok := c.find(int64(binary.BigEndian.Uint64(vals[colID])), next)
		if !ok {
			continue // in a range, linked by no seal of the chunk
		}
		next = i + 1
		if c.encTo[i] > c.encFrom[i] {
			c.twice[i] = true // the first one read is hashed
			continue
		}
		c.encFrom[i] = len(c.encs)
		c.encs = appendRaw(append(c.encs, leafPrefix), vals)
		c.encTo[i] = len(c.encs)
		c.at[i] = int64(binary.BigEndian.Uint64(vals[colAt]))
	}
	return rows.Err()
}

// find returns where id is in ids, trying at first.
func (c *sealChunk) find(id int64, at int) (int, bool) {
	if at < len(c.ids) && c.ids[at] == id {
		return at, true
	}
	return slices.BinarySearch(c.ids, id)
}

// storedHash is seal i's stored hash.
func (c *sealChunk) storedHash(i int) []byte {
	from := 0
	if i > 0 {
		from = c.hashEnd[i-1]
	}
	return c.hashes[from:c.hashEnd[i]]
}

// chain walks the seals in order, recomputing the chain, and checks each
// stored checkpoint (and the external one) at its size. One goroutine
// reads the chunks from PostgreSQL while this one hashes the one before:
// the database, the reading and the hashing overlap.
func (v *verifier) chain(ctx context.Context, tx pgx.Tx, cps []storedCheckpoint) (chainState, error) {
	var (
		full    = make(chan *sealChunk, 1)
		free    = make(chan *sealChunk, 2)
		readErr error
	)
	free <- new(sealChunk)
	free <- new(sealChunk)
	go func() {
		defer close(full)
		for from := int64(math.MinInt64); ; {
			c := <-free
			last, ok, err := c.read(ctx, tx, from)
			if err != nil || !ok {
				readErr = err
				return
			}
			full <- c
			if last == math.MaxInt64 {
				return
			}
			from = last + 1
		}
	}()
	w := chainWalker{v: v, cps: cps, st: chainState{maxAt: minMicros}}
	for c := range full { // to the end: the reader never waits for a chunk back in vain
		w.walk(c)
		free <- c
	}
	if readErr != nil {
		return w.st, readErr
	}
	v.report.Sealed, v.report.Head = w.n, w.h
	return w.st, nil
}

// chainWalker recomputes the chain over the chunks, in order.
type chainWalker struct {
	v   *verifier
	cps []storedCheckpoint
	st  chainState
	h   Hash  // the recomputed h_n
	n   int64 // the last seq walked
	ci  int   // the next checkpoint to check
}

// walk walks the seals of chunk c.
func (w *chainWalker) walk(c *sealChunk) {
	var (
		v, r, st = w.v, &w.v.report, &w.st
		grace    = v.grace.Microseconds()
		skew     = MaxClockSkew.Microseconds()
		j        int // where the next seal's event is in c.ids, most likely
	)
	for i, seq := range c.seq {
		sealedID, stored := c.eventID[i], c.storedHash(i)
		if seq != w.n+1 {
			if w.n+1 == seq-1 {
				v.problem(ProblemRemoved, w.n+1, 0, "seal %d is missing: the event sealed there was removed with its seal", w.n+1)
			} else {
				v.problem(ProblemRemoved, w.n+1, 0, "seals %d to %d are missing: the events sealed there were removed with their seals", w.n+1, seq-1)
			}
		}
		w.n = seq
		k, _ := c.find(sealedID, j) // every linked id is in c.ids
		j = k + 1
		if enc := c.encs[c.encFrom[k]:c.encTo[k]]; len(enc) == 0 {
			v.problem(ProblemRemoved, seq, sealedID, "event %d, sealed at seq %d, is missing: it was deleted", sealedID, seq)
			copy(w.h[:], stored) // carry on from the stored chain
		} else {
			st.present++
			if c.twice[k] {
				v.problem(ProblemInserted, seq, sealedID,
					"event %d, sealed at seq %d, is in the log twice: a row was inserted with its id", sealedID, seq)
			}
			w.h = Next(w.h, sha256.Sum256(enc), seq)
			if string(w.h[:]) != string(stored) {
				p := v.problem(ProblemChanged, seq, sealedID,
					"event %d differs from what was sealed at seq %d: a field was changed", sealedID, seq)
				if st.changed == nil && p != nil {
					st.changed, st.badLeaf = p, append([]byte(nil), enc...)
				}
				copy(w.h[:], stored)
			}
			at := c.at[k]
			// The checkpoint that covers this seal was signed when it was
			// sealed: an event dated after it could not have been seen.
			if ci := w.ci; ci < len(w.cps) && w.cps[ci].sigErr == nil && at > w.cps[ci].Time.UnixMicro()-pgEpochMicros+skew {
				v.problem(ProblemFuture, seq, sealedID,
					"event %d is dated %s but was sealed by the checkpoint of %s: its time was forged",
					sealedID, pgTime(at).Format(checkpointTime), w.cps[ci].Time.Format(checkpointTime))
			} else {
				if st.maxAt != minMicros && at < st.maxAt-grace {
					v.problem(ProblemInserted, seq, sealedID,
						"event %d (%s) was sealed after events of more than %s later: it was inserted after the fact",
						sealedID, pgTime(at).Format(checkpointTime), v.grace)
				}
				st.maxAt = max(st.maxAt, at)
			}
		}
		h := w.h
		for ; w.ci < len(w.cps) && w.cps[w.ci].Size <= seq; w.ci++ {
			c := &w.cps[w.ci]
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
		if pub := v.published; pub != nil && pub.Size == seq {
			if pub.Head != h {
				v.problem(ProblemRewritten, seq, 0,
					"the witness's checkpoint of %s has head %s at size %d but the chain's head there is %s: history before it was rewritten",
					pub.Time.Format(checkpointTime), pub.Head, seq, h)
			} else {
				r.Published = true
			}
		}
	}
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
