package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// DB begins transactions: *pgxpool.Pool and *pgx.Conn are DBs.
type DB interface {
	BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error)
}

// SealerLockKey is the one-key transaction advisory lock a sealer holds
// while it extends the chain ("HLSEAL" in ASCII). Two-key locks (the issue
// path's) never collide with it.
const SealerLockKey int64 = 0x484c5345414c

// DefaultBatch is how many events one sealing transaction links.
const DefaultBatch = 5000

// DefaultGrace is how long after its time an event may still be unsealed
// (or be sealed after later events) without being reported as inserted
// after the fact; the sealer looks back as far. It bounds how long a
// transaction may stay open after writing its event.
const DefaultGrace = 5 * time.Minute

// BatchTimeout bounds one sealing transaction: a sealer whose database
// stopped answering (a partition, a failover) gives up the batch and
// tries again on its next run, on a fresh connection.
const BatchTimeout = 30 * time.Second

// ErrRewritten is returned by the sealer when the chain in the database is
// not an extension of a head it saw before or of the witness's last
// checkpoint: someone removed or replaced seals. The sealer then refuses
// to sign anything, and records what it found as an ActionChainRewritten
// event.
var ErrRewritten = errors.New("audit: the sealed chain was rewritten")

// ActionChainRewritten is the audit event the sealer writes when it finds
// the chain rewritten (actor SealerActor, outcome refused, the detail says
// what it found). It stays unsealed: the sealer extends no rewritten
// chain.
const ActionChainRewritten = "audit.chain_rewritten"

// SealerActor is the actor of the events the sealer writes itself.
const SealerActor = "hotline-sealer"

// MaxClockSkew is how far after the sealer's clock an event's time may be
// and still be sealed: events take their time from the database's clock
// (migration 00010), so one dated later was given a forged time, and the
// sealer leaves it unsealed until its time comes (Verify reports it
// meanwhile as ProblemFuture).
const MaxClockSkew = time.Minute

// Sealer links committed audit events into the hash chain and signs a
// checkpoint of every new head. Run one in every replica: an advisory lock
// lets one seal at a time and the others skip.
type Sealer struct {
	db  DB
	kid string
	key ed25519.PrivateKey

	// Batch is the number of events per transaction (DefaultBatch if 0).
	Batch int
	// Lookback is how far back in event time a routine run looks for
	// unsealed events (DefaultGrace if 0). A full sweep of the log runs on
	// the first call, when this sealer has not completed a run for more
	// than half of it (it was paused, or other replicas held the lock),
	// and at least every ten lookbacks, for an event whose transaction
	// stayed open longer than the lookback. A quiet log costs no sweeps.
	Lookback time.Duration
	// Logger receives Run's errors (slog.Default() if nil).
	Logger *slog.Logger
	// Witness, when set, receives every checkpoint the sealer signs, and
	// the sealer refuses to extend a chain that does not continue its last
	// one.
	Witness Witness
	// Trusted returns the audit public keys a witness's checkpoint may be
	// signed with (retired ones included); nil trusts the sealer's own key.
	Trusted func() map[string]ed25519.PublicKey

	mu        sync.Mutex
	swept     bool        // a full sweep completed
	seen      Checkpoint  // the newest (size, head) this sealer saw committed
	lastRun   time.Time   // database time of this sealer's last completed run
	lastSweep time.Time   // database time of its last completed sweep
	published *Checkpoint // the witness's last checkpoint, once read
	reported  string      // the last rewrite recorded as an event
	future    int64       // the last future-dated event logged
}

// NewSealer returns a sealer over db signing with the audit key (kid, key),
// from keyring.AuditSigner.
func NewSealer(db DB, kid string, key ed25519.PrivateKey) *Sealer {
	return &Sealer{db: db, kid: kid, key: key}
}

// The sealer's statements.
const (
	sealRoleSQL = `SET LOCAL ROLE ` + SealerRole
	sealLockSQL = `SELECT pg_try_advisory_xact_lock($1), now()`
	sealHeadSQL = `SELECT s.seq, s.hash, c.size, c.head
		FROM (SELECT seq, hash FROM audit_seals ORDER BY seq DESC LIMIT 1) s
		FULL JOIN (SELECT size, head FROM audit_checkpoints ORDER BY size DESC LIMIT 1) c ON true`
	sealSeenSQL = `SELECT hash FROM audit_seals WHERE seq = $1`
	// A sweep walks the log in id order, one chunk of Batch ids per
	// transaction: sealNextSQL finds where the next chunk starts (the first
	// id after the last one examined, so a gap in the ids costs nothing),
	// and sealSweepSQL reads the unsealed events of the ids $1 to $2. A
	// routine run reads only the events of the last Lookback
	// (audit_events_at index). Whether an event is sealed is asked per
	// event, one probe of audit_seals_event_id_key: OFFSET 0 keeps the
	// NOT EXISTS a subplan, which PostgreSQL never turns into a join; and
	// the sweep leaves out events dated after what it may seal in Go, not
	// in SQL, where a condition on at would make audit_events_at (at, id)
	// look cheaper than the primary key and have the whole index read. So
	// whatever the statistics say (a freshly loaded log has none) no
	// statement reads more than its chunk, or its window, of events, and
	// one seal per event. The unbounded form (the first Batch unsealed
	// events after $1, the anti-join left to the planner) was planned on a
	// freshly loaded log as a parallel hash anti-join of every event
	// against every seal and an on-disk sort of all that was left, for
	// every batch (4.9 s a batch at 2,000,000 events; at 10,000,000 a
	// batch outlasted BatchTimeout); and a sweep of a sealed log read all
	// of it in one statement. sealPlanSQL leaves the planner no sequential
	// scan where an index bounds the read, and no JIT compilation, which
	// its estimate for a chunk of a big log would buy for every batch. The
	// reads are planned with their parameters (an unnamed statement,
	// QueryExecModeDescribeExec).
	sealPlanSQL  = `SET LOCAL enable_seqscan = off; SET LOCAL jit = off`
	sealNextSQL  = `SELECT min(id) FROM audit_events WHERE id > $1`
	sealSweepSQL = `SELECT ` + eventColumns + ` FROM audit_events e
		WHERE e.id BETWEEN $1 AND $2 AND NOT EXISTS (` + sealedSQL + `)
		ORDER BY e.id`
	sealWindowSQL = `SELECT ` + eventColumns + ` FROM audit_events e
		WHERE e.at >= $4 AND e.at <= $3 AND e.id > $1 AND NOT EXISTS (` + sealedSQL + `)
		ORDER BY e.id LIMIT $2`
	sealedSQL = `SELECT 1 FROM audit_seals s WHERE s.event_id = e.id OFFSET 0`
	// The first event dated after what the sealer may seal ($1).
	sealFutureSQL    = `SELECT id, at FROM audit_events WHERE at > $1 ORDER BY at, id LIMIT 1`
	sealRewrittenSQL = `INSERT INTO audit_events (actor, role, action, outcome, detail)
		VALUES ('` + SealerActor + `', 'system', '` + ActionChainRewritten + `', 'refused', $1)`
	sealCheckpointSQL = `INSERT INTO audit_checkpoints (size, head, at, kid, signature) VALUES ($1, $2, $3, $4, $5)`
)

// SealOnce seals every committed unsealed event, one transaction (and one
// signed checkpoint) per batch, and returns how many it sealed. It returns
// 0 and no error when another sealer holds the lock.
func (s *Sealer) SealOnce(ctx context.Context) (sealed int, err error) {
	if len(s.key) != ed25519.PrivateKeySize || s.kid == "" {
		return 0, errors.New("audit: the sealer has no audit key (keyring purpose \"audit\"): it cannot sign checkpoints")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var run sealRun
	for {
		n, more, err := s.sealBatch(ctx, &run)
		sealed += n
		if err != nil || !more {
			return sealed, err
		}
	}
}

// sealRun is the state of one SealOnce across its batches.
type sealRun struct {
	started bool
	sweep   bool
	since   time.Time // window mode: events at or after
	after   int64     // a sweep: the last id examined; a window: the last id linked
}

// sealBatch links one batch in one transaction; more reports a full batch.
func (s *Sealer) sealBatch(ctx context.Context, run *sealRun) (n int, more bool, err error) {
	batch, lookback := s.Batch, s.Lookback
	if batch <= 0 {
		batch = DefaultBatch
	}
	if lookback <= 0 {
		lookback = DefaultGrace
	}
	ctx, cancel := context.WithTimeout(ctx, BatchTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, pgx.TxOptions{}) // READ COMMITTED: each statement sees the latest commits
	if err != nil {
		return 0, false, fmt.Errorf("audit: seal: %w", err)
	}
	defer func() { // bounded too: a rollback over a dead connection would wait forever
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		tx.Rollback(rctx)
		rcancel()
	}()

	var (
		locked bool
		now    time.Time
	)
	if _, err := tx.Exec(ctx, sealRoleSQL); err != nil {
		return 0, false, fmt.Errorf("audit: seal: %s (is the login a member of %s?): %w", sealRoleSQL, SealerRole, err)
	}
	if _, err := tx.Exec(ctx, sealPlanSQL); err != nil {
		return 0, false, fmt.Errorf("audit: seal: %w", err)
	}
	if err := tx.QueryRow(ctx, sealLockSQL, SealerLockKey).Scan(&locked, &now); err != nil {
		return 0, false, fmt.Errorf("audit: seal: lock: %w", err)
	}
	if !locked {
		return 0, false, nil // another replica is sealing
	}

	// The head to extend, and the newest checkpoint, which the sealer wrote
	// with it: if they disagree someone changed the tail, and signing on
	// top of it would bless the change.
	var (
		seq, cpSize *int64
		hash, cpHd  []byte
	)
	if err := tx.QueryRow(ctx, sealHeadSQL).Scan(&seq, &hash, &cpSize, &cpHd); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("audit: seal: read the head: %w", err)
	}
	var (
		size int64
		head Hash
	)
	if seq != nil {
		size = *seq
		copy(head[:], hash)
	}
	switch {
	case size == 0 && cpSize == nil:
	case cpSize == nil || *cpSize != size || Hash(cpHd) != head:
		return 0, false, s.rewritten(ctx, "the newest seal (seq %d) is not the newest checkpoint's head", size)
	}
	if s.seen.Size > 0 {
		var h []byte
		err := tx.QueryRow(ctx, sealSeenSQL, s.seen.Size).Scan(&h)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return 0, false, fmt.Errorf("audit: seal: %w", err)
		}
		if len(h) != len(Hash{}) || Hash(h) != s.seen.Head {
			return 0, false, s.rewritten(ctx, "seal %d no longer has the head %s this sealer saw", s.seen.Size, s.seen.Head)
		}
	}
	if err := s.continuesWitness(ctx, tx, size, cpSize); err != nil {
		return 0, false, err
	}
	latestAt := now.Add(MaxClockSkew)
	s.logFuture(ctx, tx, latestAt)
	if !run.started {
		run.started = true
		run.sweep = !s.swept || now.Sub(s.lastRun) > lookback/2 || now.Sub(s.lastSweep) > 10*lookback
		run.since = now.Add(-lookback)
	}

	var (
		rows pgx.Rows
		next = run.after // where this run goes on from after this batch
	)
	if run.sweep {
		var lo *int64
		if err := tx.QueryRow(ctx, sealNextSQL, run.after).Scan(&lo); err != nil {
			return 0, false, fmt.Errorf("audit: seal: the next unswept event: %w", err)
		}
		if lo == nil { // the sweep reached the end of the log
			if err := tx.Commit(ctx); err != nil {
				return 0, false, fmt.Errorf("audit: seal: commit: %w", err)
			}
			s.finished(run, now)
			return 0, false, nil
		}
		// The chunk's ids [lo, next]: every one is examined (at most batch
		// rows, all read). An id near the top of bigint (an owner can
		// give one) ends the chunk there rather than wrapping around.
		next = math.MaxInt64
		if *lo <= math.MaxInt64-int64(batch-1) {
			next = *lo + int64(batch-1)
		}
		rows, err = tx.Query(ctx, sealSweepSQL, pgx.QueryExecModeDescribeExec, *lo, next)
	} else {
		rows, err = tx.Query(ctx, sealWindowSQL, pgx.QueryExecModeDescribeExec, run.after, batch, latestAt, run.since)
	}
	if err != nil {
		return 0, false, fmt.Errorf("audit: seal: read unsealed events: %w", err)
	}
	var (
		lf           leafer
		seals        [][]any
		latestMicros = latestAt.UnixMicro() - pgEpochMicros // PostgreSQL's
	)
	for rows.Next() {
		vals := rows.RawValues()
		if err := checkBinary(rows, vals); err != nil {
			rows.Close()
			return 0, false, err
		}
		if run.sweep && (vals[colAt] == nil || int64(binary.BigEndian.Uint64(vals[colAt])) > latestMicros) {
			continue // dated after the sealer's clock (logFuture): sealed when its time comes
		}
		id := int64(binary.BigEndian.Uint64(vals[colID]))
		size++
		head = Next(head, lf.leaf(vals), size)
		h := head // each row keeps its own copy
		seals = append(seals, []any{size, id, h[:], now})
		if !run.sweep {
			next = id
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("audit: seal: read unsealed events: %w", err)
	}
	if len(seals) == 0 {
		if err := tx.Commit(ctx); err != nil {
			return 0, false, fmt.Errorf("audit: seal: commit: %w", err)
		}
		run.after = next
		if !run.sweep { // a sweep goes on with its next chunk
			s.finished(run, now)
		}
		return 0, run.sweep, nil
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"audit_seals"}, []string{"seq", "event_id", "hash", "sealed_at"},
		pgx.CopyFromRows(seals)); err != nil {
		return 0, false, fmt.Errorf("audit: seal: insert seals: %w", err)
	}
	cp := SignCheckpoint(size, head, now, s.kid, s.key)
	if _, err := tx.Exec(ctx, sealCheckpointSQL, cp.Size, cp.Head[:], cp.Time, cp.KID, cp.Signature); err != nil {
		return 0, false, fmt.Errorf("audit: seal: insert checkpoint: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("audit: seal: commit: %w", err)
	}
	s.seen, run.after = cp, next
	if err := s.publish(ctx, cp); err != nil {
		return len(seals), false, err
	}
	more = run.sweep || len(seals) == batch
	if !more {
		s.finished(run, now)
	}
	return len(seals), more, nil
}

// rewritten records a rewrite the sealer found, as an ActionChainRewritten
// event (once per finding per sealer: it retries every run), and returns
// it as an ErrRewritten.
func (s *Sealer) rewritten(ctx context.Context, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	err := fmt.Errorf("%w: %s; the sealer signs nothing until an auditor has run verify and the chain is repaired", ErrRewritten, msg)
	if s.reported == msg {
		return err
	}
	tx, terr := s.db.BeginTx(ctx, pgx.TxOptions{})
	if terr != nil {
		return errors.Join(err, fmt.Errorf("audit: recording the rewrite: %w", terr))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, terr = tx.Exec(ctx, sealRoleSQL); terr == nil {
		if _, terr = tx.Exec(ctx, sealRewrittenSQL, msg); terr == nil {
			terr = tx.Commit(ctx)
		}
	}
	if terr != nil {
		return errors.Join(err, fmt.Errorf("audit: recording the rewrite: %w", terr))
	}
	s.reported = msg
	return err
}

// trusted is the audit keys a witness's checkpoint may be signed with.
func (s *Sealer) trusted() map[string]ed25519.PublicKey {
	if s.Trusted != nil {
		return s.Trusted()
	}
	return map[string]ed25519.PublicKey{s.kid: s.key.Public().(ed25519.PublicKey)}
}

// continuesWitness checks that the chain in tx (size seals; the newest
// checkpoint's size cpSize) continues the witness's last checkpoint, and
// publishes the newest stored checkpoint when the witness lags behind it
// (a publication lost to a crash, or another replica's sealer).
func (s *Sealer) continuesWitness(ctx context.Context, tx pgx.Tx, size int64, cpSize *int64) error {
	if s.Witness == nil {
		return nil
	}
	if s.published == nil {
		c, ok, err := s.Witness.Last(ctx, s.trusted())
		if err != nil {
			return fmt.Errorf("audit: seal: the witness: %w", err)
		}
		if ok {
			s.published = &c
		} else {
			s.published = &Checkpoint{}
		}
	}
	w := s.published
	if w.Size > size {
		return s.rewritten(ctx, "the chain has %d seals but the witness's checkpoint of %s covers %d: the tail was removed",
			size, w.Time.Format(checkpointTime), w.Size)
	}
	if w.Size > 0 {
		var h []byte
		if err := tx.QueryRow(ctx, sealSeenSQL, w.Size).Scan(&h); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("audit: seal: %w", err)
		}
		if len(h) != len(Hash{}) || Hash(h) != w.Head {
			return s.rewritten(ctx, "seal %d does not have the head %s of the witness's checkpoint of %s: history before it was rewritten",
				w.Size, w.Head, w.Time.Format(checkpointTime))
		}
	}
	if cpSize != nil && *cpSize > w.Size {
		c, ok, err := Latest(ctx, tx)
		if err != nil || !ok {
			return fmt.Errorf("audit: seal: the newest checkpoint: %v", err)
		}
		if err := c.Verify(s.trusted()); err != nil {
			return s.rewritten(ctx, "the newest stored checkpoint (size %d) does not verify: %v", c.Size, err)
		}
		return s.publish(ctx, c)
	}
	return nil
}

// publish hands c to the witness.
func (s *Sealer) publish(ctx context.Context, c Checkpoint) error {
	if s.Witness == nil {
		return nil
	}
	if err := s.Witness.Publish(ctx, c); err != nil {
		return fmt.Errorf("audit: seal: publishing checkpoint %d: %w", c.Size, err)
	}
	s.published = &c
	return nil
}

// logFuture logs, once per event, an event dated after latest: its time
// was forged, and it stays unsealed until then.
func (s *Sealer) logFuture(ctx context.Context, tx pgx.Tx, latest time.Time) {
	var (
		id int64
		at time.Time
	)
	if err := tx.QueryRow(ctx, sealFutureSQL, latest).Scan(&id, &at); err != nil || id == s.future {
		return
	}
	s.future = id
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log.Error("audit sealer: an event is dated after the database's clock: its time was forged; it is not sealed before then",
		"event", id, "at", at.UTC().Format(checkpointTime))
}

// finished records a completed run (database time now).
func (s *Sealer) finished(run *sealRun, now time.Time) {
	s.lastRun = now
	if run.sweep {
		s.swept, s.lastSweep = true, now
	}
}

// checkBinary makes sure the non-text columns came in PostgreSQL's binary
// format, which the encoder reads.
func checkBinary(rows pgx.Rows, vals [][]byte) error {
	fds := rows.FieldDescriptions()
	off := len(fds) - numColumns
	for _, i := range []int{colID, colAt, colMethod, colUUID} {
		if fds[off+i].Format != pgx.BinaryFormatCode {
			return fmt.Errorf("audit: column %s arrived in text format", fds[off+i].Name)
		}
	}
	if len(vals[off+colID]) != 8 && vals[off+colID] != nil || len(vals[off+colAt]) != 8 && vals[off+colAt] != nil {
		return errors.New("audit: unexpected id or time encoding")
	}
	return nil
}

// Latest returns the newest checkpoint in the database (what hotlinectl
// audit checkpoint prints), or ok false when nothing is sealed yet.
func Latest(ctx context.Context, q Querier) (c Checkpoint, ok bool, err error) {
	var head, sig []byte
	err = q.QueryRow(ctx, `SELECT size, head, at, kid, signature FROM audit_checkpoints ORDER BY size DESC LIMIT 1`).
		Scan(&c.Size, &head, &c.Time, &c.KID, &sig)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("audit: latest checkpoint: %w", err)
	}
	copy(c.Head[:], head)
	c.Time, c.Signature = c.Time.UTC(), sig
	return c, true, nil
}

// Run seals every interval until ctx is done, logging failures; a
// rewritten chain (ErrRewritten) is logged at error level on every try.
func (s *Sealer) Run(ctx context.Context, every time.Duration) {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.SealOnce(ctx); err != nil && ctx.Err() == nil {
			log.Error("audit sealer", "err", err, "sealed", n)
		} else if n > 0 {
			log.Debug("audit sealer", "sealed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
