package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/cmd/internal/wiring"
)

// sealerComparison is issue throughput at one concurrency without and with
// the audit sealer running (sealing must not serialise issuing).
type sealerComparison struct {
	c                 int
	without, with     clientResult
	sealed            int
	sealerErrors      int
	every             time.Duration
	backlogBeforeWith int
	logPath           string
}

// countSeals returns how many events the chain holds.
func countSeals(ctx context.Context, dbURL string) (int, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM audit_seals`).Scan(&n)
	return n, err
}

// sealerErrors counts the errors the server's sealer logged.
func sealerErrors(logPath string) int {
	f, err := os.Open(logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.Contains(l, `"level":"ERROR"`) && strings.Contains(l, `"msg":"audit sealer"`) {
			n++
		}
	}
	return n
}

// compareSealer runs two gRPC phases back to back at the highest
// concurrency: with the server's sealer paused, then running as serve runs
// it. Both start with the log fully sealed.
func compareSealer(ctx context.Context, o *options, srv *benchServer, tokens []string, dbURL string) (*sealerComparison, error) {
	c := slices.Max(o.concurrency)
	sc := &sealerComparison{c: c, every: wiring.DefaultSealEvery, logPath: srv.logPath}
	srv.stopSealer()
	step("sealer: sealing the backlog of the earlier phases")
	if _, err := srv.seal(ctx); err != nil {
		return nil, err
	}
	phase := func(name string) (clientResult, error) {
		if err := vacuum(ctx, dbURL); err != nil {
			return clientResult{}, err
		}
		step("c=%d: gRPC for %s, %s", c, o.duration, name)
		cfg := clientConfig{Addr: srv.Addr(), Tokens: tokens, Devices: o.devices, Concurrency: c,
			Duration: o.duration, Warmup: o.warmup, RunID: fmt.Sprintf("s%d-%d", c, time.Now().UnixNano())}
		r, err := runClient(ctx, cfg, nil, func() {}, func() {})
		return r.result, err
	}
	var err error
	if sc.without, err = phase("sealer stopped"); err != nil {
		return nil, err
	}
	if sc.backlogBeforeWith, err = srv.seal(ctx); err != nil {
		return nil, err
	}
	errsBefore := sealerErrors(srv.logPath)
	before, err := countSeals(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	srv.startSealer()
	sc.with, err = phase("sealer running every " + sc.every.String())
	srv.stopSealer()
	if err != nil {
		return nil, err
	}
	after, err := countSeals(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	sc.sealed = after - before
	sc.sealerErrors = sealerErrors(srv.logPath) - errsBefore
	return sc, nil
}

func (sc *sealerComparison) print(w io.Writer) {
	ratio := sc.with.Rate() / sc.without.Rate()
	verdict := "ok"
	if ratio < 0.9 {
		verdict = "BELOW 0.9"
	}
	fmt.Fprintf(w, "\nIssue throughput with the audit sealer running (every %s) vs without, c=%d:\n", sc.every, sc.c)
	fmt.Fprintf(w, "  without: %.0f/s (p50 %s ms, p99 %s ms)\n", sc.without.Rate(), ms(sc.without.P50), ms(sc.without.P99))
	fmt.Fprintf(w, "  with:    %.0f/s (p50 %s ms, p99 %s ms); %d events sealed\n", sc.with.Rate(), ms(sc.with.P50), ms(sc.with.P99), sc.sealed)
	fmt.Fprintf(w, "  ratio:   %.2f %s (goal >= 0.9)\n", ratio, verdict)
	if sc.sealerErrors > 0 {
		fmt.Fprintf(w, "  sealer errors: %d (see %s)\n", sc.sealerErrors, sc.logPath)
	}
}
