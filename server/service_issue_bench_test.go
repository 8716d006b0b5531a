package server_test

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// BenchmarkIssueDecisionPath measures Service.Issue without a database or
// a transport: the request checks, the policy (DecideIssue), the issuance
// MAC, minting the voice code and the grant, and the server log line (JSON,
// discarded), over a store that hands the decision the facts of a
// registered device within every limit (whose sequence never wraps) and
// stores nothing. Interleaved in the same run, in batches of 64, the bare Ed25519 signature every new
// issuance costs: x-baseline is the path in units of that signature.
func BenchmarkIssueDecisionPath(b *testing.B) {
	e := newEnv(b)
	e.svc.Logger = slog.New(slog.NewJSONHandler(io.Discard, nil))
	e.svc.Limits = server.Limits{PerDevice: 1 << 30, PerAgent: 1 << 30}
	e.register(serialA, "owner@example.com")
	gen := e.keys.CurrentGeneration()
	var seq int64
	e.store.IssueFn = func(_ context.Context, a server.Actor, req server.IssueRequest, lim server.Limits,
		decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
		now := e.clock.Now().UTC()
		d, err := decide(server.IssueFacts{Actor: a, Request: req, Limits: lim, Now: now, Registered: true,
			LastSequence: seq % 255, LastIssuedAt: now.Add(-time.Minute), KeyGeneration: gen,
			InWindow: func(server.LimitScope, int) (time.Time, error) { return time.Time{}, nil }})
		if err != nil || d.Refusal != nil {
			b.Fatalf("decide: %v, refusal %v", err, d.Refusal)
		}
		seq++
		return d.Issuance, nil
	}
	_, sk := e.keys.GrantSigner()
	msg := make([]byte, 330) // about a grant's signing input
	req := server.IssueRequest{Serial: serialA, Ticket: "BENCH-1", Method: server.VerifyOwnerContact}
	i := 0
	interleave(b, 64, func() {
		i++
		req.RequestID = "bench-" + strconv.Itoa(i)
		if _, err := e.svc.Issue(e.ctx, agentA, req); err != nil {
			b.Fatal(err)
		}
	}, func() { ed25519.Sign(sk, msg) })
}

// interleave runs op b.N times, and base in blocks of block calls before
// every block-th op, untimed, then reports base's time per call and op's
// in units of it.
func interleave(b *testing.B, block int, op, base func()) {
	b.ReportAllocs()
	var baseDur time.Duration
	baseN := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%block == 0 {
			b.StopTimer()
			start := time.Now()
			for range block {
				base()
			}
			baseDur += time.Since(start)
			baseN += block
			b.StartTimer()
		}
		op()
	}
	b.StopTimer()
	if baseN > 0 && b.N > 0 {
		opNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		baseNs := float64(baseDur.Nanoseconds()) / float64(baseN)
		b.ReportMetric(baseNs, "baseline-ns/op")
		b.ReportMetric(opNs/baseNs, "x-baseline")
	}
}
