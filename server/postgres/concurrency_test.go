package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
)

type attempt struct {
	serial string
	key    string // actor and request id
	iss    server.Issuance
	err    error
}

// TestConcurrentIssue runs 32 issuers through 4 replicas (separate pools)
// for the same 3 devices. Issuers come in pairs that send the same request
// ids at the same time through different replicas, as a client retrying
// against another server would.
func TestConcurrentIssue(t *testing.T) {
	ctx := context.Background()
	dbs := make([]*postgres.DB, 4)
	for i := range dbs {
		dbs[i] = openDB(t)
	}
	serials := []string{registerDevice(t, dbs[0], ""), registerDevice(t, dbs[0], ""), registerDevice(t, dbs[0], "")}
	lim := server.Limits{PerDevice: 3, PerDeviceWindow: 24 * time.Hour, PerAgent: 100, PerAgentWindow: time.Hour}
	run := newName("conc")

	const goroutines, perGoroutine = 32, 3
	var (
		mu       sync.Mutex
		attempts []attempt
		wg       sync.WaitGroup
		start    = make(chan struct{})
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pair := g / 2
			db := dbs[g%len(dbs)]
			a := agent(fmt.Sprintf("%s-agent-%d", run, pair))
			s := serials[pair%len(serials)]
			<-start
			for k := range perGoroutine {
				req := server.IssueRequest{RequestID: fmt.Sprintf("%s-req-%d-%d", run, pair, k), Serial: s,
					Ticket: "T-77", Method: server.VerifyProofOfPurchase}
				iss, err := db.Issue(ctx, a, req, lim, policy)
				mu.Lock()
				attempts = append(attempts, attempt{serial: s, key: a.Subject + "/" + req.RequestID, iss: iss, err: err})
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()

	// Each request id's two attempts got the same answer.
	byKey := map[string][]attempt{}
	for _, at := range attempts {
		byKey[at.key] = append(byKey[at.key], at)
		if at.err != nil && server.ErrorCode(at.err) != server.ELimit {
			t.Errorf("%s: unexpected error %v", at.key, at.err)
		}
	}
	for key, ats := range byKey {
		if len(ats) != 2 {
			t.Fatalf("%s: %d attempts", key, len(ats))
		}
		if ats[0].iss != ats[1].iss || server.ErrorCode(ats[0].err) != server.ErrorCode(ats[1].err) {
			t.Errorf("%s: a retry got another answer:\n%+v %v\n%+v %v", key, ats[0].iss, ats[0].err, ats[1].iss, ats[1].err)
		}
	}

	auditor := server.Actor{Subject: "auditor", Role: server.RoleAuditor}
	for _, s := range serials {
		// Exactly the limit, sequences 1..3 without gaps or repeats.
		ids := map[string]int64{}
		refusals := 0
		for _, at := range attempts {
			if at.serial != s {
				continue
			}
			if at.err != nil {
				refusals++
				continue
			}
			ids[at.iss.ID] = at.iss.Sequence
		}
		var seqs []int64
		for _, q := range ids {
			seqs = append(seqs, q)
		}
		slices.Sort(seqs)
		if !slices.Equal(seqs, []int64{1, 2, 3}) {
			t.Errorf("%s: sequences %v, want [1 2 3]", s, seqs)
		}
		stored, err := dbs[1].Issuances(ctx, auditor, s, 0, 100)
		if err != nil || len(stored) != 3 {
			t.Fatalf("%s: %d stored issuances, %v", s, len(stored), err)
		}
		for _, iss := range stored {
			if ids[iss.ID] != iss.Sequence {
				t.Errorf("%s: stored issuance %+v was not answered", s, iss)
			}
		}

		// One success event per issuance, one refused event per refusal.
		evs, err := dbs[2].QueryAudit(ctx, auditor, server.AuditFilter{Serial: s, Action: server.ActionIssue, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		successes, refused := map[string]int{}, 0
		for _, e := range evs {
			switch e.Outcome {
			case server.OutcomeSuccess:
				successes[e.IssuanceID]++
			case server.OutcomeRefused:
				refused++
			}
		}
		for id := range ids {
			if successes[id] != 1 {
				t.Errorf("%s: issuance %s has %d success events, want 1", s, id, successes[id])
			}
		}
		if len(successes) != len(ids) {
			t.Errorf("%s: %d success events for %d issuances", s, len(successes), len(ids))
		}
		if refused != refusals {
			t.Errorf("%s: %d refused events for %d refusals", s, refused, refusals)
		}
		t.Logf("%s: 3 issued, %d refusals", s, refusals)
	}
}

// TestConcurrentAgentLimit: one agent issuing for many devices through 4
// replicas at once gets exactly the per-agent limit.
func TestConcurrentAgentLimit(t *testing.T) {
	ctx := context.Background()
	dbs := make([]*postgres.DB, 4)
	for i := range dbs {
		dbs[i] = openDB(t)
	}
	const limit, goroutines = 5, 16
	lim := server.Limits{PerDevice: 100, PerDeviceWindow: 24 * time.Hour, PerAgent: limit, PerAgentWindow: time.Hour}
	a := agent(newName("busy"))
	var serials []string
	for range goroutines {
		serials = append(serials, registerDevice(t, dbs[0], ""))
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		ok     int
		limit_ int
		start  = make(chan struct{})
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := dbs[g%len(dbs)].Issue(ctx, a, issueRequest(serials[g]), lim, policy)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case server.ErrorCode(err) == server.ELimit && err.(*server.Error).Limit == "per-agent":
				limit_++
			default:
				t.Errorf("unexpected error %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if ok != limit || limit_ != goroutines-limit {
		t.Fatalf("%d issued, %d refused; want %d and %d", ok, limit_, limit, goroutines-limit)
	}
	evs, err := dbs[0].QueryAudit(ctx, server.Actor{Subject: "auditor", Role: server.RoleAuditor},
		server.AuditFilter{Actor: a.Subject, Action: server.ActionIssue, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	n := map[server.Outcome]int{}
	for _, e := range evs {
		n[e.Outcome]++
	}
	if n[server.OutcomeSuccess] != ok || n[server.OutcomeRefused] != limit_ {
		t.Errorf("events %v, want %d successes and %d refusals", n, ok, limit_)
	}
}
