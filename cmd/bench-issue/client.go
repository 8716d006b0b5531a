package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// clientConfig is what the parent sends the load-generating child on its
// standard input.
type clientConfig struct {
	Addr        string
	Tokens      []string
	Devices     int
	Concurrency int
	Duration    time.Duration
	Warmup      time.Duration
	RunID       string
}

// clientResult is what the child answers on its standard output.
type clientResult struct {
	// Calls counts the calls started within the window (all completed).
	Calls int
	// Errors counts failed calls by gRPC code.
	Errors     map[string]int
	FirstError string
	// Elapsed is from the window's start until the last call returned.
	Elapsed time.Duration
	// P50, P99 and Mean are the successful calls' latencies.
	P50, P99, Mean time.Duration
	// CPU is the child's user+system CPU seconds over the window.
	CPU float64
}

// Rate is the successful calls per second.
func (r clientResult) Rate() float64 {
	n := r.Calls
	for _, e := range r.Errors {
		n -= e
	}
	return float64(n) / r.Elapsed.Seconds()
}

// The child prints readyLine when its warm-up is over and the window
// starts, then one JSON clientResult line.
const readyLine = "window-start"

// clientMain is the child: Concurrency workers, each with its own
// connection, issue for a random device as a random agent until Duration
// is over.
func clientMain() int {
	var cfg clientConfig
	if err := json.NewDecoder(os.Stdin).Decode(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench-issue client:", err)
		return 2
	}
	ctxs := make([]context.Context, len(cfg.Tokens))
	for i, t := range cfg.Tokens {
		ctxs[i] = metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+t)
	}
	clients := make([]hotlinev1.RecoveryServiceClient, cfg.Concurrency)
	for i := range clients {
		conn, err := grpc.NewClient(cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench-issue client:", err)
			return 1
		}
		defer conn.Close()
		clients[i] = hotlinev1.NewRecoveryServiceClient(conn)
	}

	type worker struct {
		lat    []time.Duration
		errs   map[string]int
		first  string
		calls  int
		serial int
	}
	workers := make([]worker, cfg.Concurrency)
	var (
		warm, done sync.WaitGroup
		go_        = make(chan struct{})
		deadline   time.Time
	)
	for w := range workers {
		wk := &workers[w]
		wk.errs = map[string]int{}
		wk.lat = make([]time.Duration, 0, 1<<14)
		warm.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			req := &hotlinev1.IssueTemporaryPasswordRequest{
				Ticket:             "BENCH-1",
				VerificationMethod: hotlinev1.VerificationMethod_VERIFICATION_METHOD_OWNER_CONTACT_MATCHED,
			}
			n := 0
			call := func() (time.Duration, error) {
				n++
				req.RequestId = fmt.Sprintf("%s-%d-%d", cfg.RunID, w, n)
				req.Serial = fmt.Sprintf("BENCH0#2020-01-01#1#DVR%013d", 1+rng.IntN(cfg.Devices))
				ctx := ctxs[rng.IntN(len(ctxs))]
				t0 := time.Now()
				_, err := clients[w].IssueTemporaryPassword(ctx, req)
				return time.Since(t0), err
			}
			for end := time.Now().Add(cfg.Warmup); time.Now().Before(end); {
				call()
			}
			warm.Done()
			<-go_
			for time.Now().Before(deadline) {
				d, err := call()
				wk.calls++
				if err != nil {
					c := status.Code(err).String()
					wk.errs[c]++
					if wk.first == "" {
						wk.first = err.Error()
					}
					continue
				}
				wk.lat = append(wk.lat, d)
			}
		}()
	}
	warm.Wait()
	fmt.Println(readyLine)
	r0 := rusage()
	start := time.Now()
	deadline = start.Add(cfg.Duration)
	close(go_)
	done.Wait()
	res := clientResult{Elapsed: time.Since(start), CPU: rusage() - r0, Errors: map[string]int{}}

	var all []time.Duration
	for _, wk := range workers {
		res.Calls += wk.calls
		all = append(all, wk.lat...)
		for c, n := range wk.errs {
			res.Errors[c] += n
		}
		if res.FirstError == "" {
			res.FirstError = wk.first
		}
	}
	res.P50, res.P99, res.Mean = percentiles(all)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "bench-issue client:", err)
		return 1
	}
	return 0
}

// percentiles returns p50, p99 and the mean of d (sorted in place).
func percentiles(d []time.Duration) (p50, p99, mean time.Duration) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return at(0.50), at(0.99), sum / time.Duration(len(d))
}

// rusage is this process's user+system CPU seconds so far.
func rusage() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// grpcPhase is one gRPC phase as the parent saw it.
type grpcPhase struct {
	result clientResult
	// serverCPU is this process's CPU seconds over the child's window.
	serverCPU float64
	// childTotalCPU is the child's CPU over its whole life (ProcessState).
	childTotalCPU float64
	// machine is every CPU's busy seconds over the window (/proc/stat).
	machine float64
	// pg is PostgreSQL's CPU seconds over the window (0 when not local).
	pg float64
}

// runClient re-executes this binary with -client and cfg, and measures the
// server's CPU over the child's window.
// start and end, when not nil, run as the window starts and ends.
func runClient(ctx context.Context, cfg clientConfig, pg *pgCPU, start, end func()) (grpcPhase, error) {
	self, err := os.Executable()
	if err != nil {
		return grpcPhase{}, err
	}
	in, err := json.Marshal(cfg)
	if err != nil {
		return grpcPhase{}, err
	}
	cmd := exec.CommandContext(ctx, self, "-client")
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return grpcPhase{}, err
	}
	if err := cmd.Start(); err != nil {
		return grpcPhase{}, err
	}
	var (
		p                grpcPhase
		cpu0, busy0, pg0 float64
		sawReady, gotRes bool
	)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case string(line) == readyLine:
			sawReady = true
			cpu0, busy0, pg0 = rusage(), machineBusy(), pg.seconds()
			if start != nil {
				start()
			}
		case sawReady && !gotRes:
			p.serverCPU, p.machine, p.pg = rusage()-cpu0, machineBusy()-busy0, pg.seconds()-pg0
			if end != nil {
				end()
			}
			if err := json.Unmarshal(line, &p.result); err != nil {
				cmd.Wait()
				return grpcPhase{}, fmt.Errorf("client answer %q: %w", line, err)
			}
			gotRes = true
		}
	}
	if err := cmd.Wait(); err != nil {
		return grpcPhase{}, fmt.Errorf("load-generating child: %w", err)
	}
	if !gotRes {
		return grpcPhase{}, fmt.Errorf("load-generating child gave no result")
	}
	p.childTotalCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return p, nil
}
