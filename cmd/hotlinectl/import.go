package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/proto/hotline/importfile"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
)

// What one ImportDevicesRequest carries at most: the server takes
// messages up to 1 MiB. A row is about 150 bytes, so a full message is
// about 150 KB; the byte bound only matters for files with absurd fields.
const (
	importChunkRows  = 1000
	importChunkBytes = 512 << 10
	// importFieldMax clips a field before it is sent: every valid field is
	// far shorter, and a clipped one is still refused, for the same reason.
	importFieldMax = 1024
)

// Plain progress (stderr not a terminal): a line per tenth of the file, or
// every importProgressEvery, whichever comes first.
const importProgressEvery = 5 * time.Second

// partialImport is devices import's "imported, but some rows were not":
// exit status exitPartial.
type partialImport struct{ refused int64 }

func (p partialImport) Error() string {
	return fmt.Sprintf("%d row(s) not imported, listed above; every other row was imported", p.refused)
}

func devicesImport(fs *flag.FlagSet) func(*cmd, []string) error {
	format := fs.String("format", "", "csv or jsonl (default: from the file name's extension, else from the content)")
	update := fs.Bool("update", false, "overwrite the model, firmware and owner contact of devices registered with different ones")
	batch := fs.Int("batch", 0, "valid rows per server transaction (0: the server's default, 20000)")
	gen := fs.Int("key-generation", 0, "master-key generation the factory derived the new devices' keys under (0: current)")
	return func(c *cmd, pos []string) error {
		if err := need(pos, 1, "FILE"); err != nil {
			return err
		}
		name := pos[0]
		f, err := importFormat(*format, name)
		if err != nil {
			return err
		}
		if *batch < 0 {
			return usagef("--batch %d: expected 0 (the server's default) or more", *batch)
		}
		file, err := os.Open(name)
		if err != nil {
			return err
		}
		defer file.Close()
		var size int64
		if fi, err := file.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		ctx, cancel := c.streamCtx()
		defer cancel() // an import that fails midway is cancelled on the server too
		im := &importer{
			ctx:    ctx,
			client: hotlinev1.NewDeviceServiceClient(c.conn),
			opts: &hotlinev1.ImportOptions{Update: *update, KeyGeneration: int32(*gen), BatchSize: int32(*batch),
				Format: f, FileName: filepath.Base(name)},
			msg: &hotlinev1.ImportDevicesRequest{},
		}
		prog := c.newProgress(filepath.Base(name), size, &im.rows)
		h := sha256.New()
		err = importfile.Parse(io.TeeReader(file, io.MultiWriter(h, prog)), f, im.add)
		var resp *hotlinev1.ImportDevicesResponse
		if err == nil {
			prog.finish()
			resp, err = im.finish(hex.EncodeToString(h.Sum(nil)))
		}
		if err != nil {
			prog.abort()
			if _, ok := status.FromError(err); !ok {
				err = fmt.Errorf("%s: %w", name, err) // the file, not the server
			}
			if im.stream != nil {
				err = importCutOff{err}
			}
			return err
		}
		return c.printImport(resp)
	}
}

// importCutOff is an import that failed after rows were sent: whole
// batches of them may be committed, and running it again completes it.
type importCutOff struct{ error }

func (e importCutOff) Unwrap() error { return e.error }

// mayHaveCommitted reports whether the server may have committed batches
// before the failure: not when it refused the import as it began (the
// role, the options).
func (e importCutOff) mayHaveCommitted() bool {
	st, ok := status.FromError(e.error)
	if !ok {
		return true // the file failed midway
	}
	switch st.Code() {
	case codes.PermissionDenied, codes.Unauthenticated:
		return false
	case codes.InvalidArgument:
		for _, d := range st.Details() {
			if br, ok := d.(*errdetails.BadRequest); ok {
				for _, v := range br.GetFieldViolations() {
					if strings.HasPrefix(v.GetField(), "options.") {
						return false
					}
				}
			}
		}
	}
	return true
}

// importFormat resolves --format: given, or from the file's extension, or
// "" for importfile.Parse to tell from the content.
func importFormat(flagValue, name string) (string, error) {
	switch strings.ToLower(flagValue) {
	case "csv":
		return importfile.FormatCSV, nil
	case "jsonl", "json", "ndjson":
		return importfile.FormatJSONLines, nil
	case "":
	default:
		return "", usagef("--format %q: expected csv or jsonl", flagValue)
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".csv":
		return importfile.FormatCSV, nil
	case ".jsonl", ".ndjson", ".json":
		return importfile.FormatJSONLines, nil
	}
	return "", nil
}

// importer streams rows to ImportDevices in chunks, opening the stream
// with the first chunk, so that a file refused at its header begins no
// import on the server.
type importer struct {
	ctx    context.Context
	client hotlinev1.DeviceServiceClient
	opts   *hotlinev1.ImportOptions
	stream grpc.ClientStreamingClient[hotlinev1.ImportDevicesRequest, hotlinev1.ImportDevicesResponse]
	msg    *hotlinev1.ImportDevicesRequest
	bytes  int
	rows   int64
}

func (im *importer) add(r importfile.Row) error {
	row := &hotlinev1.ImportRow{Line: int64(r.Line), Serial: clip.Clip(r.Serial, importFieldMax), Model: clip.Clip(r.Model, importFieldMax),
		Firmware: clip.Clip(r.Firmware, importFieldMax), OwnerContact: clip.Clip(r.OwnerContact, importFieldMax),
		ProductionDate: clip.Clip(r.ProductionDate, importFieldMax), Malformed: clip.Clip(r.Malformed, importFieldMax)}
	im.msg.Rows = append(im.msg.Rows, row)
	im.bytes += 16 + len(row.Serial) + len(row.Model) + len(row.Firmware) + len(row.OwnerContact) + len(row.ProductionDate) + len(row.Malformed)
	im.rows++
	if len(im.msg.Rows) >= importChunkRows || im.bytes >= importChunkBytes {
		return im.send()
	}
	return nil
}

func (im *importer) send() error {
	if im.stream == nil {
		s, err := im.client.ImportDevices(im.ctx)
		if err != nil {
			return err
		}
		im.stream = s
		im.msg.Options = im.opts
	}
	err := im.stream.Send(im.msg)
	if errors.Is(err, io.EOF) {
		// The server ended the call early (a refusal): its status says why.
		_, err = im.stream.CloseAndRecv()
		if err == nil {
			err = errors.New("the server ended the import early without an error")
		}
	}
	im.msg, im.bytes = &hotlinev1.ImportDevicesRequest{}, 0
	return err
}

// finish sends the last rows with the file's SHA-256 and waits for the
// report (the server commits the last batch and writes the audit event).
func (im *importer) finish(sum string) (*hotlinev1.ImportDevicesResponse, error) {
	im.msg.Sha256 = sum
	if err := im.send(); err != nil {
		return nil, err
	}
	return im.stream.CloseAndRecv()
}

// printImport prints the report: counts, then each row not imported as
// "line N: SERIAL: reason". Rows refused make it a partialImport.
func (c *cmd) printImport(r *hotlinev1.ImportDevicesResponse) error {
	refused := r.GetConflicts() + r.GetDuplicates() + r.GetInvalid()
	if c.output == "json" {
		if err := c.printJSON(r, nil); err != nil {
			return err
		}
	} else {
		if refused == 0 && r.GetInserted() == 0 && r.GetUpdated() == 0 {
			if r.GetReceived() == 0 {
				fmt.Fprintln(c.stdout, "nothing changed: the file has no rows")
			} else {
				printf(c.stdout, "nothing changed: all %d rows already registered\n", r.GetReceived())
			}
		} else {
			printf(c.stdout, "imported %d rows\n", r.GetReceived())
		}
		w := table(c.stdout)
		for _, kv := range []struct {
			k string
			v int64
		}{{"inserted", r.GetInserted()}, {"updated", r.GetUpdated()}, {"unchanged", r.GetUnchanged()},
			{"conflicts", r.GetConflicts()}, {"duplicates", r.GetDuplicates()}, {"invalid", r.GetInvalid()}, {"batches", r.GetBatches()}} {
			w.Printf("  %s\t%d\n", kv.k, kv.v)
		}
		w.Printf("  import\t%s\n", r.GetImportId())
		w.Printf("  sha256\t%s\n", r.GetSha256())
		if err := w.Flush(); err != nil {
			return err
		}
		if refused > 0 {
			printf(c.stdout, "\nrows not imported:\n")
			for _, e := range r.GetErrors() {
				printf(c.stdout, "line %d: %s: %s\n", e.GetLine(), orDash(e.GetSerial()), e.GetReason())
			}
			if n := r.GetErrorsDropped(); n > 0 {
				printf(c.stdout, "and %d more, not listed (-o json lists the same; fix these first)\n", n)
			}
		}
	}
	if refused > 0 {
		return partialImport{refused}
	}
	return nil
}

// importProgress reports the bytes of the file read (written to it) and
// the rows read so far.
type importProgress interface {
	io.Writer
	finish()
	abort()
}

// newProgress is a progress bar when stderr is a terminal, plain lines
// otherwise (a log, a CI job).
func (c *cmd) newProgress(name string, size int64, rows *int64) importProgress {
	if f, ok := c.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		total := size
		if total == 0 {
			total = -1 // unknown: a spinner
		}
		bar := progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription("importing "+name),
			progressbar.OptionShowBytes(true),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowElapsedTimeOnFinish(),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(f) }),
		)
		return &barProgress{bar: bar, w: f}
	}
	return &lineProgress{w: c.stderr, name: name, size: size, rows: rows, start: time.Now(), last: time.Now()}
}

type barProgress struct {
	bar *progressbar.ProgressBar
	w   io.Writer
}

func (p *barProgress) Write(b []byte) (int, error) { return p.bar.Write(b) }
func (p *barProgress) finish() {
	p.bar.Finish()
	fmt.Fprintln(p.w, "waiting for the server to commit the last batch…")
}
func (p *barProgress) abort() { p.bar.Exit() }

type lineProgress struct {
	w           io.Writer
	name        string
	size, read  int64
	rows        *int64
	tenth       int64
	start, last time.Time
}

func (p *lineProgress) Write(b []byte) (int, error) {
	p.read += int64(len(b))
	now := time.Now()
	var tenth int64
	if p.size > 0 {
		tenth = min(p.read*10/p.size, 10)
	}
	if tenth > p.tenth || now.Sub(p.last) >= importProgressEvery {
		p.tenth, p.last = max(tenth, p.tenth), now
		if p.size > 0 {
			fmt.Fprintf(p.w, "importing %s: read %s of %s (%d%%), %d rows\n", p.name, mb(p.read), mb(p.size), p.read*100/p.size, *p.rows)
		} else {
			fmt.Fprintf(p.w, "importing %s: read %s, %d rows\n", p.name, mb(p.read), *p.rows)
		}
	}
	return len(b), nil
}

func (p *lineProgress) finish() {
	fmt.Fprintf(p.w, "importing %s: read the whole file (%s, %d rows) in %s; waiting for the server to commit the last batch…\n",
		p.name, mb(p.read), *p.rows, time.Since(p.start).Round(100*time.Millisecond))
}

func (p *lineProgress) abort() {}

func mb(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}
