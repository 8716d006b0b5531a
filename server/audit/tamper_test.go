package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// sealedLog builds a fresh log of 25 events sealed in two batches (20 then
// 5, so two checkpoints) and returns the ids, the sealer and the newest
// checkpoint, kept "outside the database" as an auditor would.
func sealedLog(t *testing.T) (ids []int64, s *Sealer, external *Checkpoint) {
	t.Helper()
	resetLog(t)
	pool := openPool(t, true)
	s = NewSealer(pool, auditKID, auditKey)
	ids = insertEvents(t, pool, 20)
	if n := seal(t, s); n != 20 {
		t.Fatalf("sealed %d, want 20", n)
	}
	ids = append(ids, insertEvents(t, pool, 5)...)
	if n := seal(t, s); n != 5 {
		t.Fatalf("sealed %d, want 5", n)
	}
	external = latest(t, pool)
	if r := verify(t, pool, external); r.Err() != nil || r.Sealed != 25 || r.Checkpoints != 2 || !r.External {
		t.Fatalf("before tampering: %+v", r)
	}
	return ids, s, external
}

// reseal is the attacker recomputing the whole chain: every seal and
// checkpoint dropped, the events sealed again by a sealer with key (a
// fresh process: it has seen no head).
func reseal(t *testing.T, conn *pgx.Conn, kid string, key []byte) {
	t.Helper()
	mustExec(t, conn, "DELETE FROM audit_checkpoints", "DELETE FROM audit_seals")
	s := NewSealer(conn, kid, key)
	if n := seal(t, s); n != 25 {
		t.Fatalf("resealed %d, want 25", n)
	}
}

// TestVerifyNamesTampering: an owner with DBA rights switches off the
// append-only triggers and, one attack at a time, tampers with the log;
// verify names each attack, the seal and the event.
func TestVerifyNamesTampering(t *testing.T) {
	type want struct {
		kind    ProblemKind
		seq     int64
		event   int // index into ids, -1 for none
		message string
	}
	cases := []struct {
		name string
		// attack tampers as the owner; it may return a checkpoint that the
		// verification should use instead of the one taken before.
		attack     func(t *testing.T, conn *pgx.Conn, ids []int64)
		noExternal want // verification without the external checkpoint
		external   want // and with it
	}{
		{
			name:       "ok/untouched",
			attack:     func(*testing.T, *pgx.Conn, []int64) {},
			noExternal: want{event: -1}, external: want{event: -1},
		},
		{
			name: "changed/field-of-sealed-event",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, fmt.Sprintf(`UPDATE audit_events SET ticket = 'T-forged' WHERE id = %d`, ids[5]))
			},
			noExternal: want{ProblemChanged, 6, 5, "a field was changed"},
			external:   want{ProblemChanged, 6, 5, "a field was changed"},
		},
		{
			name: "changed/null-to-empty",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, fmt.Sprintf(`UPDATE audit_events SET client_addr = '' WHERE id = %d`, ids[4]))
			},
			noExternal: want{ProblemChanged, 5, 4, "a field was changed"},
			external:   want{ProblemChanged, 5, 4, "a field was changed"},
		},
		{
			name: "removed/event-and-its-seal",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, `DELETE FROM audit_seals WHERE seq = 8`,
					fmt.Sprintf(`DELETE FROM audit_events WHERE id = %d`, ids[7]))
			},
			noExternal: want{ProblemRemoved, 8, -1, "seal 8 is missing"},
			external:   want{ProblemRemoved, 8, -1, "seal 8 is missing"},
		},
		{
			name: "removed/run-of-events-and-their-seals",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, `DELETE FROM audit_seals WHERE seq BETWEEN 9 AND 14`,
					fmt.Sprintf(`DELETE FROM audit_events WHERE id BETWEEN %d AND %d`, ids[8], ids[13]))
			},
			noExternal: want{ProblemRemoved, 9, -1, "seals 9 to 14 are missing"},
			external:   want{ProblemRemoved, 9, -1, "seals 9 to 14 are missing"},
		},
		{
			name: "removed/event-only",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				disableTriggers(t, conn, true) // the foreign key too (superuser)
				mustExec(t, conn, fmt.Sprintf(`DELETE FROM audit_events WHERE id = %d`, ids[11]))
			},
			noExternal: want{ProblemRemoved, 12, 11, "is missing: it was deleted"},
			external:   want{ProblemRemoved, 12, 11, "is missing: it was deleted"},
		},
		{
			name: "reordered/two-events-swapped",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				cols := `at, actor, role, client_addr, action, outcome, serial, ticket, method, reason, request_id, issuance_id, detail`
				mustExec(t, conn, fmt.Sprintf(`UPDATE audit_events e SET (%[1]s) = (SELECT %[1]s FROM audit_events o
					WHERE o.id = CASE e.id WHEN %[2]d THEN %[3]d ELSE %[2]d END) WHERE e.id IN (%[2]d, %[3]d)`, cols, ids[3], ids[10]))
			},
			noExternal: want{ProblemReordered, 4, 3, fmt.Sprintf("sealed at seq 11 for event")},
			external:   want{ProblemReordered, 4, 3, "swapped"},
		},
		{
			name: "inserted/forged-event-without-seal",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, `INSERT INTO audit_events (at, actor, role, action, outcome, serial)
					VALUES (now() - interval '1 hour', 'mallory', 'supervisor', 'device.release', 'success', 'JZ6OES#2017-08-01#3#DVR0000000000001')`)
			},
			noExternal: want{ProblemInserted, 0, -1, "is not sealed although events of more than 5m0s later are"},
			external:   want{ProblemInserted, 0, -1, "inserted after the fact"},
		},
		{
			name: "inserted/forged-event-with-forged-seal",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				forgeTail(t, conn, `now() - interval '1 hour'`)
			},
			noExternal: want{ProblemInserted, 26, -1, "was sealed after events of more than 5m0s later"},
			external:   want{ProblemInserted, 26, -1, "inserted after the fact"},
		},
		{
			name: "unsigned/forged-seal-of-the-present",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				forgeTail(t, conn, `clock_timestamp()`) // not back-dated: only the missing signature shows
			},
			noExternal: want{ProblemUnsigned, 26, -1, "is covered by no signed checkpoint"},
			external:   want{ProblemUnsigned, 26, -1, "is covered by no signed checkpoint"},
		},
		{
			name: "truncated/tail-events-seals-and-checkpoints",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, `DELETE FROM audit_checkpoints WHERE size > 20`, `DELETE FROM audit_seals WHERE seq > 20`,
					fmt.Sprintf(`DELETE FROM audit_events WHERE id >= %d`, ids[20]))
			},
			noExternal: want{event: -1}, // consistent: only a copy kept elsewhere shows it
			external:   want{ProblemTruncated, 25, -1, "covers 25 seals but the chain has only 20"},
		},
		{
			name: "checkpoint/rewritten-chain-signed-by-attacker",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, fmt.Sprintf(`UPDATE audit_events SET outcome = 'refused' WHERE id = %d`, ids[2]))
				reseal(t, conn, auditKID, attackerKey) // the trusted kid, the attacker's key
			},
			noExternal: want{ProblemCheckpoint, 25, -1, "signature does not verify"},
			external:   want{ProblemCheckpoint, 25, -1, "signature does not verify"},
		},
		{
			name: "rewritten/checkpoints-dropped-chain-resealed",
			attack: func(t *testing.T, conn *pgx.Conn, ids []int64) {
				mustExec(t, conn, fmt.Sprintf(`UPDATE audit_events SET actor = 'someone-else' WHERE id = %d`, ids[2]))
				// The sealer signs whatever unsealed history it finds: with
				// every seal and checkpoint gone, it re-seals the forgery
				// with the real key.
				reseal(t, conn, auditKID, auditKey)
			},
			noExternal: want{event: -1}, // the database alone is consistent again
			external:   want{ProblemRewritten, 25, -1, "history before it was rewritten"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ids, _, external := sealedLog(t)
			conn := ownerConn(t)
			disableTriggers(t, conn, false)
			tc.attack(t, conn, ids)
			pool := openPool(t, true)
			for _, v := range []struct {
				name string
				ext  *Checkpoint
				want want
			}{{"without-external", nil, tc.noExternal}, {"with-external", external, tc.external}} {
				r := verify(t, pool, v.ext)
				p := r.FirstProblem
				t.Logf("%s: %+v", v.name, r)
				if chunked := verifyInChunks(t, pool, v.ext, 3); !slices.EqualFunc(r.Problems, chunked.Problems,
					func(a, b *Problem) bool { return *a == *b }) || chunked.Head != r.Head || chunked.Sealed != r.Sealed {
					t.Fatalf("%s: walked 3 seqs at a time, verify found %+v, want what it finds in one walk", v.name, chunked)
				}
				if v.want.kind == "" {
					if p != nil {
						t.Fatalf("%s: problem %v, want none", v.name, p)
					}
					continue
				}
				if p == nil {
					t.Fatalf("%s: no problem found, want %s", v.name, v.want.kind)
				}
				var wantEvent int64
				if v.want.event >= 0 {
					wantEvent = ids[v.want.event]
				}
				if p.Kind != v.want.kind || p.Seq != v.want.seq || (v.want.event >= 0 && p.EventID != wantEvent) ||
					!strings.Contains(p.Message, v.want.message) {
					t.Fatalf("%s: problem %v\nwant kind %s seq %d event %d message containing %q",
						v.name, p, v.want.kind, v.want.seq, wantEvent, v.want.message)
				}
				if !errors.Is(r.Err(), p) {
					t.Fatalf("Err() = %v", r.Err())
				}
			}
		})
	}
}

// verifyInChunks runs verify with the chain walked chunk seqs at a time.
func verifyInChunks(tb testing.TB, db DB, external *Checkpoint, chunk int64) Report {
	tb.Helper()
	defer func(was int64) { chainChunk = was }(chainChunk)
	chainChunk = chunk
	return verify(tb, db, external)
}

// forgeTail appends a forged event at time at (SQL) with a seal whose hash
// is computed correctly: the chain itself is public, only checkpoints are
// signed.
func forgeTail(t *testing.T, conn *pgx.Conn, at string) {
	t.Helper()
	ctx := context.Background()
	mustExec(t, conn, `INSERT INTO audit_events (at, actor, role, action, outcome, serial)
		VALUES (`+at+`, 'mallory', 'supervisor', 'device.release', 'success', 'JZ6OES#2017-08-01#3#DVR0000000000001')`)
	rows, err := conn.Query(ctx, `SELECT `+eventColumns+` FROM audit_events e WHERE actor = 'mallory'`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		lf   leafer
		leaf Hash
		id   int64
	)
	for rows.Next() {
		leaf = lf.leaf(rows.RawValues())
		if err := rows.Scan(&id, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	rows.Close()
	var head []byte
	if err := conn.QueryRow(ctx, `SELECT hash FROM audit_seals WHERE seq = 25`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	h := Next(Hash(head), leaf, 26)
	if _, err := conn.Exec(ctx, `INSERT INTO audit_seals (seq, event_id, hash) VALUES (26, $1, $2)`, id, h[:]); err != nil {
		t.Fatal(err)
	}
}

// TestSealerRefusesRewrittenChain: a sealer that saw a head refuses to sign
// on top of a chain that no longer contains it, and any sealer refuses to
// extend a chain whose newest seal is not the newest checkpoint's head.
func TestSealerRefusesRewrittenChain(t *testing.T) {
	t.Run("refused/seals-and-checkpoints-dropped", func(t *testing.T) {
		_, s, _ := sealedLog(t)
		conn := ownerConn(t)
		disableTriggers(t, conn, false)
		mustExec(t, conn, "DELETE FROM audit_checkpoints", "DELETE FROM audit_seals")
		if _, err := s.SealOnce(context.Background()); !errors.Is(err, ErrRewritten) {
			t.Fatalf("SealOnce = %v, want ErrRewritten", err)
		}
	})
	t.Run("refused/tail-seal-forged", func(t *testing.T) {
		sealedLog(t)
		conn := ownerConn(t)
		disableTriggers(t, conn, false)
		forgeTail(t, conn, "clock_timestamp()")
		fresh := NewSealer(openPool(t, true), auditKID, auditKey)
		if _, err := fresh.SealOnce(context.Background()); !errors.Is(err, ErrRewritten) {
			t.Fatalf("SealOnce = %v, want ErrRewritten", err)
		}
	})
}

// TestVerifyNamesARowInsertedWithASealedEventsID: an owner drops the
// primary key and inserts a second row with the id of a sealed event.
// Verify names that event as in the log twice, whichever copy it reads
// first, and however the chain is walked.
func TestVerifyNamesARowInsertedWithASealedEventsID(t *testing.T) {
	ids, _, external := sealedLog(t)
	conn := ownerConn(t)
	disableTriggers(t, conn, false)
	t.Cleanup(func() { // the schema back as the other tests expect it
		mustExec(t, conn, `DELETE FROM audit_events WHERE actor = 'mallory'`,
			`ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id)`,
			`ALTER TABLE audit_seals ADD CONSTRAINT audit_seals_event_id_fkey FOREIGN KEY (event_id) REFERENCES audit_events (id)`)
		for _, tbl := range auditTables {
			mustExec(t, conn, "ALTER TABLE "+tbl+" ENABLE TRIGGER ALL")
		}
	})
	mustExec(t, conn, `ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey CASCADE`,
		fmt.Sprintf(`INSERT INTO audit_events (id, actor, role, action, outcome)
			OVERRIDING SYSTEM VALUE VALUES (%d, 'mallory', 'supervisor', 'device.release', 'success')`, ids[7]))
	pool := openPool(t, true)
	for _, r := range []Report{verify(t, pool, external), verifyInChunks(t, pool, external, 3)} {
		if hasProblem(r, ProblemInserted, ids[7], "is in the log twice") == nil {
			t.Fatalf("a second row with the id of sealed event %d: %+v", ids[7], r)
		}
	}
}
