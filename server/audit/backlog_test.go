package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestSweepSealsABacklogChunkByChunk: a sealer that starts on a backlog
// (a restore, a long outage) seals it one chunk of Batch ids per
// transaction, past ids that were never used (rolled-back inserts, an
// identity restarted far ahead), past chunks sealed already, up to the
// top of bigint, past an event dated ahead (left unsealed), and picks up
// a straggler committed after later events. Every other event ends up
// sealed once and the log verifies, walked in one chunk or in many. Gaps cost
// nothing: walking the jump of 10^12 ids chunk by chunk would not end
// within the deadline.
func TestSweepSealsABacklogChunkByChunk(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	pool := openPool(t, true)
	owner := ownerConn(t)
	s := NewSealer(pool, auditKID, auditKey)
	s.Batch = 10

	total := len(insertEvents(t, pool, 25))
	if n := seal(t, s); n != 25 {
		t.Fatalf("sealed %d, want 25", n)
	}
	rolledBack, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	insertEvents(t, rolledBack, 30) // ids never used
	if err := rolledBack.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	total += len(insertEvents(t, pool, 13))
	var next int64
	if err := owner.QueryRow(ctx, `SELECT max(id) + 1000000000000 FROM audit_events`).Scan(&next); err != nil {
		t.Fatal(err)
	}
	mustExec(t, owner, fmt.Sprintf(`ALTER TABLE audit_events ALTER COLUMN id RESTART WITH %d`, next))
	total += len(insertEvents(t, pool, 17))
	// A straggler: its transaction stays open while later events commit
	// and are sealed.
	straggler, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer straggler.Rollback(ctx)
	insertEvents(t, straggler, 1)
	total += len(insertEvents(t, pool, 21))
	var future int64 // stays unsealed; the sweep goes on past it
	if err := owner.QueryRow(ctx, `INSERT INTO audit_events (at, actor, role, action, outcome)
		VALUES (now() + interval '1 day', 'mallory', 'supervisor', 'device.release', 'success') RETURNING id`).Scan(&future); err != nil {
		t.Fatal(err)
	}
	total += len(insertEvents(t, pool, 8))
	for _, id := range []int64{math.MaxInt64 - 3, math.MaxInt64} { // an owner may give any id
		mustExec(t, owner, fmt.Sprintf(`INSERT INTO audit_events (id, actor, role, action, outcome)
			OVERRIDING SYSTEM VALUE VALUES (%d, 'agent-x', 'agent', 'device.lookup', 'success')`, id))
		total++
	}
	// A sealer started now sweeps the whole log on its first run.
	sweep := func() int {
		t.Helper()
		s := NewSealer(pool, auditKID, auditKey)
		s.Batch = 10
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		n, err := s.SealOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := sweep(); n != total-25 {
		t.Fatalf("sealed %d of the backlog, want %d", n, total-25)
	}
	if err := straggler.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	total++
	if n := sweep(); n != 1 {
		t.Fatalf("the next sweep sealed %d, want the straggler alone", n)
	}
	r := verify(t, pool, latest(t, pool))
	if r.Events != int64(total+1) || r.Sealed != int64(total) || r.Unsealed != 1 || !r.External ||
		len(r.Problems) != 1 || hasProblem(r, ProblemFuture, future, "") == nil {
		t.Fatalf("verify: %+v, want %d events sealed and the future one alone unsealed and reported", r, total)
	}
	if chunked := verifyInChunks(t, pool, latest(t, pool), 4); chunked.Head != r.Head || chunked.Sealed != r.Sealed ||
		len(chunked.Problems) != 1 || *chunked.Problems[0] != *r.Problems[0] {
		t.Fatalf("walked 4 seqs at a time, verify found %+v, want what it finds in one walk", chunked)
	}
}

// TestSweepReadsOneChunkWhateverThePlan: no node of the sweep's statement
// reads more than one chunk of rows, whichever plan PostgreSQL is pushed
// to, on a log it never analysed, where the chunk is sealed and where it
// is not. (Its unbounded predecessor was planned on such a log as a hash
// anti-join of every event against every seal; a join of the chunk's
// events with its seals could still be a nested loop comparing every
// event with every seal.)
func TestSweepReadsOneChunkWhateverThePlan(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	pool := openPool(t, true)
	ids := insertEvents(t, pool, 3000)
	s := NewSealer(pool, auditKID, auditKey)
	s.Batch = 1000
	seal(t, s)
	ids = append(ids, insertEvents(t, pool, 3000)...)

	const chunk = 100
	plans := []string{"", "enable_nestloop", "enable_hashjoin", "enable_mergejoin", "enable_indexscan",
		"enable_indexonlyscan", "enable_bitmapscan", "enable_sort", "enable_material", "enable_memoize"}
	for _, where := range []struct {
		name string
		lo   int64
	}{{"sealed", ids[1000]}, {"unsealed", ids[4000]}} {
		for _, off := range plans {
			t.Run(where.name+"/off="+off, func(t *testing.T) {
				tx, err := ownerConn(t).Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer tx.Rollback(ctx)
				mustExec(t, tx, sealPlanSQL, "SET LOCAL max_parallel_workers_per_gather = 0")
				if off != "" {
					mustExec(t, tx, "SET LOCAL "+off+" = off")
				}
				var plan []byte
				if err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sealSweepSQL, pgx.QueryExecModeDescribeExec,
					where.lo, where.lo+chunk-1).Scan(&plan); err != nil {
					t.Fatal(err)
				}
				var doc []struct{ Plan planNode }
				if err := json.Unmarshal(plan, &doc); err != nil || len(doc) != 1 {
					t.Fatalf("EXPLAIN's JSON: %v", err)
				}
				if n := doc[0].Plan.mostRead(); n > chunk {
					t.Errorf("a node of the plan read %.0f rows, more than the chunk of %d:\n%s", n, chunk, plan)
				}
			})
		}
	}
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	ActualRows    float64    `json:"Actual Rows"`
	RemovedFilter float64    `json:"Rows Removed by Filter"`
	RemovedCheck  float64    `json:"Rows Removed by Index Recheck"`
	RemovedJoin   float64    `json:"Rows Removed by Join Filter"`
	Plans         []planNode `json:"Plans"`
}

// mostRead is the most rows one node of the tree read in one loop: those
// it returned and those it read and dropped.
func (p planNode) mostRead() float64 {
	n := p.ActualRows + p.RemovedFilter + p.RemovedCheck + p.RemovedJoin
	for _, c := range p.Plans {
		n = max(n, c.mostRead())
	}
	return n
}
