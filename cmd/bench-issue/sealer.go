package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/dvrhotline/hotline/server/audit"
)

// sealerComparison is issue throughput at one concurrency without and with
// the audit sealer running (issue 4: sealing must not serialise issuing).
type sealerComparison struct {
	c                 int
	without, with     clientResult
	sealed            int
	sealRuns          int
	sealerErr         error
	every             time.Duration
	backlogBeforeWith int
}

// catchUp seals every committed event, so that a phase starts with no
// backlog.
func catchUp(ctx context.Context, s *audit.Sealer) (int, error) {
	total := 0
	for {
		n, err := s.SealOnce(ctx)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
}

// compareSealer runs two gRPC phases back to back at the highest
// concurrency: without the sealer, then with it sealing every second as
// serve does. Both start with the log fully sealed.
func compareSealer(ctx context.Context, o *options, srv *benchServer, tokens []string, dbURL string) (*sealerComparison, error) {
	c := slices.Max(o.concurrency)
	kid, key := srv.kr.AuditSigner()
	sealer := audit.NewSealer(srv.db.Pool(), kid, key)
	sc := &sealerComparison{c: c, every: time.Second}
	step("sealer: sealing the backlog of the earlier phases")
	if _, err := catchUp(ctx, sealer); err != nil {
		return nil, err
	}
	phase := func(name string) (clientResult, error) {
		if err := vacuum(ctx, dbURL); err != nil {
			return clientResult{}, err
		}
		step("c=%d: gRPC for %s, %s", c, o.duration, name)
		cfg := clientConfig{Addr: srv.addr, Tokens: tokens, Devices: o.devices, Concurrency: c,
			Duration: o.duration, Warmup: o.warmup, RunID: fmt.Sprintf("s%d-%d", c, time.Now().UnixNano())}
		r, err := runClient(ctx, cfg, nil, func() {}, func() {})
		return r.result, err
	}
	var err error
	if sc.without, err = phase("sealer stopped"); err != nil {
		return nil, err
	}
	if sc.backlogBeforeWith, err = catchUp(ctx, sealer); err != nil {
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(sc.every)
		defer t.Stop()
		for {
			n, err := sealer.SealOnce(sctx)
			sc.sealed += n
			sc.sealRuns++
			if err != nil && sctx.Err() == nil && sc.sealerErr == nil {
				sc.sealerErr = err
			}
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	sc.with, err = phase("sealer running every second")
	stop()
	<-done
	return sc, err
}

func (sc *sealerComparison) print(w io.Writer) {
	ratio := sc.with.Rate() / sc.without.Rate()
	verdict := "ok"
	if ratio < 0.9 {
		verdict = "BELOW 0.9"
	}
	fmt.Fprintf(w, "\nIssue throughput with the audit sealer running (every %s) vs without, c=%d:\n", sc.every, sc.c)
	fmt.Fprintf(w, "  without: %.0f/s (p50 %s ms, p99 %s ms)\n", sc.without.Rate(), ms(sc.without.P50), ms(sc.without.P99))
	fmt.Fprintf(w, "  with:    %.0f/s (p50 %s ms, p99 %s ms); %d events sealed in %d runs\n", sc.with.Rate(), ms(sc.with.P50), ms(sc.with.P99), sc.sealed, sc.sealRuns)
	fmt.Fprintf(w, "  ratio:   %.2f %s (goal >= 0.9)\n", ratio, verdict)
	if sc.sealerErr != nil {
		fmt.Fprintf(w, "  sealer error: %v\n", sc.sealerErr)
	}
}
