package audit

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

// TestServiceRoleCannotModifyTheLog: as hotline_service the server can
// append and read events and read seals and checkpoints, and cannot UPDATE,
// DELETE or TRUNCATE any of them; CheckServiceRole passes for it and
// fails for the owner. Even the owner meets the trigger.
func TestServiceRoleCannotModifyTheLog(t *testing.T) {
	_, _, _ = sealedLog(t)
	ctx := context.Background()
	conn := ownerConn(t)
	mustExec(t, conn, SetRoleSQL)
	if err := CheckServiceRole(ctx, conn); err != nil {
		t.Fatalf("CheckServiceRole as %s: %v", ServiceRole, err)
	}
	insertEvents(t, conn, 1) // INSERT and SELECT are granted
	for _, table := range auditTables {
		for _, stmt := range []string{
			"UPDATE " + table + " SET %s",
			"DELETE FROM " + table,
			"TRUNCATE " + table,
		} {
			col := map[string]string{"audit_events": "actor = 'x'", "audit_seals": "seq = seq", "audit_checkpoints": "kid = 'x'"}[table]
			q := strings.Replace(stmt, "%s", col, 1)
			t.Run("refused/service-role/"+q, func(t *testing.T) {
				_, err := conn.Exec(ctx, q)
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "42501" || !strings.Contains(pe.Message, "permission denied") {
					t.Fatalf("%s as %s: %v, want permission denied", q, ServiceRole, err)
				}
			})
		}
	}
	mustExec(t, conn, "RESET ROLE")
	err := CheckServiceRole(ctx, conn)
	if err == nil || !strings.Contains(err.Error(), "UPDATE on audit_events") || !strings.Contains(err.Error(), "TRUNCATE on audit_seals") {
		t.Fatalf("CheckServiceRole as the owner = %v, want a refusal naming the privileges", err)
	}
	t.Logf("owner: %v", err)
	for _, q := range []string{"UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_seals", "TRUNCATE audit_checkpoints"} {
		t.Run("refused/owner-meets-trigger/"+q, func(t *testing.T) {
			_, err := conn.Exec(ctx, q)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || !strings.Contains(pe.Message, "is append-only") {
				t.Fatalf("%s as the owner: %v, want the append-only trigger", q, err)
			}
		})
	}
}

// TestConcurrentInsertAndSeal: many goroutines append events through the
// store on several pools (replicas, as the service role) while two sealers
// run; afterwards every event is sealed exactly once and the log verifies.
// Verifications run meanwhile must see consistent states.
func TestConcurrentInsertAndSeal(t *testing.T) {
	resetLog(t)
	ctx := context.Background()
	const (
		replicas   = 3
		writers    = 4 // per replica
		perWriter  = 60
		totalWrite = replicas * writers * perWriter
	)
	var dbs []*postgres.DB
	for range replicas {
		cfg, err := pgxpool.ParseConfig(testURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.AfterConnect = SetServiceRole
		db, err := postgres.OpenConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		dbs = append(dbs, db)
	}
	sealers := []*Sealer{
		NewSealer(openPool(t, true), auditKID, auditKey),
		NewSealer(openPool(t, true), auditKID, auditKey),
	}
	for _, s := range sealers {
		s.Batch = 37 // many batches, many checkpoints
	}
	verifyPool := openPool(t, true)

	var (
		writing  sync.WaitGroup
		running  sync.WaitGroup
		done     = make(chan struct{})
		sealed   atomic.Int64
		verifies atomic.Int64
		errs     = make(chan error, 64)
	)
	for r, db := range dbs {
		for w := range writers {
			writing.Add(1)
			go func() {
				defer writing.Done()
				for i := range perWriter {
					e := server.AuditEvent{Actor: "agent-" + string(rune('a'+r)) + string(rune('a'+w)), Role: server.RoleAgent,
						ClientAddr: "10.0.0.1:1", Action: server.ActionLookup, Outcome: server.OutcomeSuccess,
						Serial: "JZ6OES#2017-08-01#3#DVR1101134C08011", Detail: "i=" + string(rune('0'+i%10))}
					if err := db.Audit(ctx, e); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	for _, s := range sealers {
		running.Add(1)
		go func() {
			defer running.Done()
			for {
				n, err := s.SealOnce(ctx)
				if err != nil {
					errs <- err
					return
				}
				sealed.Add(int64(n))
				select {
				case <-done:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	running.Add(1)
	go func() {
		defer running.Done()
		for {
			r, err := Verify(ctx, verifyPool, trusted, nil)
			if err != nil {
				errs <- err
				return
			}
			if r.FirstProblem != nil {
				errs <- r.FirstProblem
				return
			}
			verifies.Add(1)
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	writing.Wait()
	close(done)
	running.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, s := range sealers {
		sealed.Add(int64(seal(t, s)))
	}
	if got := sealed.Load(); got != totalWrite {
		t.Fatalf("sealers report %d sealed, want %d", got, totalWrite)
	}
	var events, seals, distinct, checkpoints int64
	if err := verifyPool.QueryRow(ctx, `SELECT (SELECT count(*) FROM audit_events), (SELECT count(*) FROM audit_seals),
		(SELECT count(DISTINCT event_id) FROM audit_seals), (SELECT count(*) FROM audit_checkpoints)`).
		Scan(&events, &seals, &distinct, &checkpoints); err != nil {
		t.Fatal(err)
	}
	if events != totalWrite || seals != totalWrite || distinct != totalWrite {
		t.Fatalf("events %d, seals %d, distinct sealed events %d, want %d each", events, seals, distinct, totalWrite)
	}
	r := verify(t, verifyPool, latest(t, verifyPool))
	if r.Err() != nil || r.Events != totalWrite || r.Sealed != totalWrite || r.Unsealed != 0 ||
		int64(r.Checkpoints) != checkpoints || !r.External {
		t.Fatalf("verify: %+v (checkpoints stored %d)", r, checkpoints)
	}
	t.Logf("%d events, %d checkpoints, %d verifications during the run", events, checkpoints, verifies.Load())
}
