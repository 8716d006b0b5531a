// Command bench-import measures a device import as a provisioner runs it:
// `hotlinectl devices import FILE` of a generated CSV file, streamed over
// real gRPC on loopback TCP to a real `hotline-server serve`, both the
// binaries built from this tree, against `psql \copy` of the same file
// into a table of the same columns, constraints and indexes in the same
// database, in the same run. It prints rows per second of both, their
// ratio (the goal: the import at least 0.7 of the copy), and the peak
// resident memory of the server and of the client at each file size (the
// goal: flat, not growing with the file).
//
//	make bench-import
//	go run ./cmd/bench-import -rows 500000,2000000
//
// For every size the benchmark creates a database of its own (migrated by
// `hotline-server migrate`), writes the file, runs the copy, then starts a
// fresh server (so that its peak memory is this import's) and runs the
// import; the database is dropped at the end. The copy's table,
// devices_copy, is created LIKE devices with the model foreign key added;
// its device_id is computed from the serial (a generated column with the
// same unique and byte-order indexes), since the file carries no device id
// and the import derives it too.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench-import:", err)
		os.Exit(1)
	}
}

// result is one file size's figures.
type result struct {
	rows                   int
	fileBytes              int64
	importTime, copyTime   time.Duration
	serverIdleKB, serverKB int64 // VmHWM before and after the import
	clientKB               int64 // the client's ru_maxrss
	clientCPU, serverCPU   time.Duration
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench-import", flag.ContinueOnError)
	sizes := fs.String("rows", "500000,2000000", "comma-separated file sizes, in rows")
	admin := fs.String("database-url", pgtest.AdminURL(), "administrative PostgreSQL URL the benchmark databases are created through (default from "+pgtest.EnvURL+")")
	psql := fs.String("psql", "psql", "psql binary")
	keep := fs.String("dir", "", "folder for the binaries and files (default: a temporary one, removed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-rows %q: expected positive integers separated by commas", *sizes)
		}
		ns = append(ns, n)
	}
	psqlPath, err := exec.LookPath(*psql)
	if err != nil {
		return fmt.Errorf("psql not found (%v): install postgresql-client or pass -psql", err)
	}
	dir := *keep
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bench-import-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	step("building hotline-server and hotlinectl into %s", dir)
	for _, c := range []string{"hotline-server", "hotlinectl"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "./cmd/"+c).CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/%s (run from the repository's root): %v\n%s", c, err, out)
		}
	}
	if err := os.Setenv(pgtest.EnvURL, *admin); err != nil {
		return err
	}
	var results []result
	for _, n := range ns {
		r, err := measure(ctx, dir, psqlPath, n)
		if err != nil {
			return fmt.Errorf("%d rows: %w", n, err)
		}
		results = append(results, r)
	}
	report(results)
	return nil
}

// measure runs the copy and the import of an n-row file.
func measure(ctx context.Context, dir, psql string, n int) (result, error) {
	r := result{rows: n}
	file := filepath.Join(dir, fmt.Sprintf("devices-%d.csv", n))
	step("%d rows: writing %s", n, file)
	var err error
	if r.fileBytes, err = writeCSV(file, n); err != nil {
		return r, err
	}
	defer os.Remove(file)

	dbURL, drop, err := pgtest.Create(ctx, "bench_import")
	if err != nil {
		return r, err
	}
	defer func() {
		if err := drop(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "bench-import:", err)
		}
	}()
	keyring := filepath.Join(dir, fmt.Sprintf("keyring-%d", n))
	env := append(os.Environ(), "HOTLINE_KEYRING="+keyring, "DATABASE_URL="+dbURL)
	server := filepath.Join(dir, "hotline-server")
	for _, a := range [][]string{{"keys", "init"}, {"migrate"}} {
		if out, err := command(env, server, a...).CombinedOutput(); err != nil {
			return r, fmt.Errorf("hotline-server %s: %v\n%s", strings.Join(a, " "), err, out)
		}
	}
	if err := createCopyTable(ctx, dbURL); err != nil {
		return r, err
	}

	step("%d rows: psql \\copy into devices_copy", n)
	t0 := time.Now()
	copyCmd := command(nil, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dbURL, "-c",
		`\copy devices_copy (serial, model, firmware, owner_contact, production_date) FROM '`+file+`' WITH (FORMAT csv, HEADER true)`)
	if out, err := copyCmd.CombinedOutput(); err != nil {
		return r, fmt.Errorf("psql \\copy: %v\n%s", err, out)
	}
	r.copyTime = time.Since(t0)
	if err := expectRows(ctx, dbURL, "devices_copy", n); err != nil {
		return r, err
	}

	srv, addr, err := startServer(env, server)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	r.serverIdleKB = peakRSS(srv.cmd.Process.Pid)
	out, err := command(env, server, "token", "--subject", "bench-provisioner", "--role", "provisioner").Output()
	if err != nil {
		return r, fmt.Errorf("hotline-server token: %v", err)
	}
	step("%d rows: hotlinectl devices import (server on %s)", n, addr)
	cli := command(append(env, "HOTLINE_ADDR="+addr, "HOTLINE_TOKEN="+strings.TrimSpace(string(out))),
		filepath.Join(dir, "hotlinectl"), "devices", "import", file)
	var cliOut strings.Builder
	cli.Stdout, cli.Stderr = &cliOut, &cliOut
	cpu0 := processCPU(srv.cmd.Process.Pid)
	t0 = time.Now()
	err = cli.Run()
	r.importTime = time.Since(t0)
	r.serverCPU = processCPU(srv.cmd.Process.Pid) - cpu0
	if err != nil {
		return r, fmt.Errorf("hotlinectl devices import: %v\n%s", err, cliOut.String())
	}
	r.serverKB = peakRSS(srv.cmd.Process.Pid)
	if ru, ok := cli.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.clientKB = ru.Maxrss
	}
	r.clientCPU = cli.ProcessState.UserTime() + cli.ProcessState.SystemTime()
	if err := expectRows(ctx, dbURL, "devices", n); err != nil {
		return r, fmt.Errorf("%w (hotlinectl said: %s)", err, cliOut.String())
	}
	step("%d rows: import %s, copy %s", n, r.importTime.Round(time.Millisecond), r.copyTime.Round(time.Millisecond))
	return r, nil
}

func command(env []string, name string, args ...string) *exec.Cmd {
	c := exec.Command(name, args...)
	c.Env = env
	return c
}

// benchModels are models of the seeded catalogue.
var benchModels = []string{"WBXHD041S1T", "WBXHD041S", "WBXHD082S2T", "WBXHD082S", "WBXHD162S4T", "WBXHD162S"}

// writeCSV writes an n-row import file of distinct, valid devices (as
// server/postgres's import benchmark generates them) with every column,
// production_date included, and returns its size.
func writeCSV(path string, n int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("serial,model,firmware,owner_contact,production_date\n")
	base := time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		date := base.AddDate(0, 0, i%3000).Format(time.DateOnly)
		contact := "owner" + strconv.Itoa(i) + "@example.com"
		if i%3 == 0 {
			contact = fmt.Sprintf("+44 7700 %06d", i%1000000)
		}
		fmt.Fprintf(w, "LOT%03d#%s#%d#B%010d,%s,V3.1.%d,%s,%s\n", i%1000, date, i%10, i, benchModels[i%len(benchModels)], i%7, contact, date)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return st.Size(), f.Close()
}

// createCopyTable makes devices_copy: the columns, checks, defaults and
// indexes of devices, the model foreign key, and device_id computed from
// the serial, with the indexes devices has on it (dropping the column
// drops them): unique, byte order, and (length, reversed) for near
// matches (migrations 00007 and 00015).
func createCopyTable(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `CREATE TABLE devices_copy (LIKE devices INCLUDING ALL);
		ALTER TABLE devices_copy DROP COLUMN device_id;
		ALTER TABLE devices_copy ADD COLUMN device_id text GENERATED ALWAYS AS (split_part(serial, '#', 4)) STORED NOT NULL;
		ALTER TABLE devices_copy ADD UNIQUE (device_id);
		CREATE INDEX ON devices_copy (device_id COLLATE "C");
		CREATE INDEX ON devices_copy (char_length(device_id), reverse(device_id) COLLATE "C");
		ALTER TABLE devices_copy ADD FOREIGN KEY (model) REFERENCES models (model)`)
	if err != nil {
		return fmt.Errorf("creating devices_copy: %w", err)
	}
	return nil
}

func expectRows(ctx context.Context, dbURL, table string, n int) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var got int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{table}.Sanitize()).Scan(&got); err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("%s holds %d rows, want %d", table, got, n)
	}
	return nil
}

// runningServer is a `hotline-server serve` child.
type runningServer struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startServer starts `hotline-server serve` on a loopback port 0,
// trusting the keyring's staff issuer, and returns its address (from its
// "serving" log line).
func startServer(env []string, bin string) (*runningServer, string, error) {
	c := command(env, bin, "serve", "--listen", "127.0.0.1:0", "--trust-keyring-staff-issuer")
	stderr, err := c.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := c.Start(); err != nil {
		return nil, "", err
	}
	s := &runningServer{cmd: c, done: make(chan struct{})}
	addrc := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct{ Msg, Addr, Level string }
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch {
			case line.Msg == "serving":
				addrc <- line.Addr
			case line.Level == "ERROR" || line.Level == "WARN":
				fmt.Fprintf(os.Stderr, "bench-import: server: %s\n", sc.Bytes())
			}
		}
	}()
	select {
	case addr := <-addrc:
		return s, addr, nil
	case <-s.done:
		c.Wait()
		return nil, "", errors.New("hotline-server serve exited before serving")
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, "", errors.New("hotline-server serve did not start within 60s")
	}
}

func (s *runningServer) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	<-s.done
	s.cmd.Wait()
}

// peakRSS is a process's peak resident set (VmHWM), in KiB.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

// processCPU is a running process's user and system time so far.
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	// Fields after the command: state is f[0], utime f[11], stime f[12],
	// in clock ticks (100 per second on Linux).
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

func report(rs []result) {
	fmt.Println()
	fmt.Println("hotlinectl devices import FILE over gRPC to hotline-server serve, vs psql \\copy of the same file (same run):")
	fmt.Printf("%-10s %8s | %10s %10s | %10s %10s | %6s %s\n", "rows", "file MB", "import s", "rows/s", "copy s", "rows/s", "ratio", "(goal >= 0.70)")
	for _, r := range rs {
		ir := float64(r.rows) / r.importTime.Seconds()
		cr := float64(r.rows) / r.copyTime.Seconds()
		verdict := "ok"
		if ir/cr < 0.7 {
			verdict = "BELOW 0.70"
		}
		fmt.Printf("%-10d %8.1f | %10.2f %10.0f | %10.2f %10.0f | %6.2f %s\n", r.rows, float64(r.fileBytes)/1e6,
			r.importTime.Seconds(), ir, r.copyTime.Seconds(), cr, ir/cr, verdict)
	}
	fmt.Println()
	fmt.Println("Peak resident memory (goal: flat, not growing with the file):")
	fmt.Printf("%-10s | %14s %14s | %14s | %12s %12s\n", "rows", "server idle MB", "server peak MB", "client peak MB", "server CPU s", "client CPU s")
	for _, r := range rs {
		fmt.Printf("%-10d | %14.1f %14.1f | %14.1f | %12.2f %12.2f\n", r.rows, float64(r.serverIdleKB)/1024,
			float64(r.serverKB)/1024, float64(r.clientKB)/1024, r.serverCPU.Seconds(), r.clientCPU.Seconds())
	}
	if len(rs) > 1 {
		a, b := rs[0], rs[len(rs)-1]
		fmt.Printf("from %d to %d rows (x%.1f): server peak x%.2f, client peak x%.2f\n", a.rows, b.rows,
			float64(b.rows)/float64(a.rows), float64(b.serverKB)/float64(max(a.serverKB, 1)), float64(b.clientKB)/float64(max(a.clientKB, 1)))
	}
	fmt.Println()
	fmt.Println("server: hotline-server serve, a fresh process per size (VmHWM before and after the import);")
	fmt.Println("client: hotlinectl, its ru_maxrss; psql \\copy reads the file client-side and streams it with COPY FROM STDIN.")
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-import: "+format+"\n", args...)
}
