package postgres_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/proto/hotline/importfile"
	"github.com/dvrhotline/hotline/server"
	"github.com/dvrhotline/hotline/server/postgres"
	"github.com/dvrhotline/hotline/server/postgres/pgtest"
)

// benchModels are the seeded catalogue's codes, cycled through by genRows.
var benchModels = []string{"WBXHD041S1T", "WBXHD041S", "WBXHD082S2T", "WBXHD082S", "WBXHD162S4T", "WBXHD162S"}

// genRows returns n valid, distinct import rows whose device ids start with
// prefix (a letter, then up to 7 letters or digits), on lines 2, 3, ... as
// in a CSV file with a header.
func genRows(n int, prefix string) []importfile.Row {
	rows := make([]importfile.Row, n)
	base := time.Date(2016, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range rows {
		date := base.AddDate(0, 0, i%3000).Format("2006-01-02")
		contact := fmt.Sprintf("owner%d@example.com", i)
		if i%3 == 0 {
			contact = fmt.Sprintf("+44 7700 %06d", i%1000000)
		}
		rows[i] = importfile.Row{
			Line:         i + 2,
			Serial:       fmt.Sprintf("LOT%03d#%s#%d#%s%010d", i%1000, date, i%10, prefix, i),
			Model:        benchModels[i%len(benchModels)],
			Firmware:     "V3.1." + strconv.Itoa(i%7),
			OwnerContact: contact,
		}
	}
	return rows
}

// deviceSource feeds validated devices to a plain CopyFrom, the baseline.
type deviceSource struct {
	rows []server.ImportDevice
	i    int
	vals [7]any
}

func (s *deviceSource) Next() bool { s.i++; return s.i <= len(s.rows) }
func (s *deviceSource) Err() error { return nil }
func (s *deviceSource) Values() ([]any, error) {
	r := &s.rows[s.i-1]
	s.vals = [7]any{r.Serial, r.DeviceID, r.Model, r.ProductionDate, r.Firmware, r.OwnerContact, int32(1)}
	return s.vals[:], nil
}

// BenchmarkImport imports HOTLINE_BENCH_IMPORT_ROWS generated devices
// (default 20,000 so that `go test -bench .` stays quick; make bench-import
// sets 1,000,000) into a fresh database through the import path, and in
// the same run times a plain COPY of the same rows into devices_copy, a
// table with the same columns, constraints (the model foreign key
// included: LIKE does not copy it, so it is added) and indexes.
//
// The import's time counts everything a client-streamed import does on
// the server: validation and canonicalisation in Go, duplicate detection,
// batching, the CopyFrom into staging, the merge, the batch records and
// the final audit event. The baseline gets the rows already validated.
func BenchmarkImport(b *testing.B) {
	n := 20000
	if v := os.Getenv("HOTLINE_BENCH_IMPORT_ROWS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("HOTLINE_BENCH_IMPORT_ROWS=%q: want a positive number", v)
		}
	}
	batch := server.DefaultImportBatchSize
	if v := os.Getenv("HOTLINE_BENCH_IMPORT_BATCH"); v != "" {
		batch, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	rows := genRows(n, "B")
	models := map[string]bool{}
	for _, m := range benchModels {
		models[m] = true
	}
	valid := make([]server.ImportDevice, n)
	for i, r := range rows {
		d, rerr := server.ValidateImportRow(r, models)
		if rerr != nil {
			b.Fatal(rerr)
		}
		valid[i] = server.ImportDevice{Line: r.Line, Device: d}
	}
	a := server.Actor{Subject: "bench", Role: server.RoleProvisioner}
	round := max(n/10, batch)
	if v := os.Getenv("HOTLINE_BENCH_IMPORT_ROUND"); v != "" {
		round, _ = strconv.Atoi(v)
	}
	b.StopTimer()

	for range b.N {
		url := pgtest.NewDatabase(b, "bench_import")
		if err := postgres.Migrate(ctx, url); err != nil {
			b.Fatal(err)
		}
		db, err := postgres.Open(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		owner, err := pgx.Connect(ctx, url)
		if err != nil {
			b.Fatal(err)
		}
		_, err = owner.Exec(ctx, `CREATE TABLE devices_copy (LIKE devices INCLUDING ALL);
			ALTER TABLE devices_copy ADD FOREIGN KEY (model) REFERENCES models (model)`)
		if err != nil {
			b.Fatal(err)
		}
		ms, err := db.Models(ctx)
		if err != nil {
			b.Fatal(err)
		}

		// The two are timed in alternating rounds (COPY first in even
		// rounds, the import first in odd ones), so that both see the same
		// table sizes and the same load from whatever else runs on the
		// machine; each round's import is a complete import (begin, batches,
		// audit event).
		var copyTime, importTime time.Duration
		inserted := 0
		for r, lo := 0, 0; lo < n; r, lo = r+1, lo+round {
			hi := min(lo+round, n)
			doCopy := func() {
				t0 := time.Now()
				copied, err := owner.CopyFrom(ctx, pgx.Identifier{"devices_copy"},
					[]string{"serial", "device_id", "model", "production_date", "firmware", "owner_contact", "key_generation"},
					&deviceSource{rows: valid[lo:hi]})
				copyTime += time.Since(t0)
				if err != nil || int(copied) != hi-lo {
					b.Fatalf("COPY: %d rows, %v", copied, err)
				}
			}
			doImport := func() {
				b.StartTimer()
				t0 := time.Now()
				sess, err := server.NewImportSession(ctx, db, a, ms, server.ImportOptions{KeyGeneration: 1, BatchSize: batch})
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range rows[lo:hi] {
					if err := sess.Add(r); err != nil {
						b.Fatal(err)
					}
				}
				rep, err := sess.Finish(fmt.Sprintf("%064x", r))
				importTime += time.Since(t0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if rep.Inserted != hi-lo || rep.Received != hi-lo {
					b.Fatalf("import report %s, want %d inserted", rep.Summary(), hi-lo)
				}
				inserted += rep.Inserted
			}
			if r%2 == 0 {
				doCopy()
				doImport()
			} else {
				doImport()
				doCopy()
			}
		}
		b.StopTimer()
		var count int
		if err := owner.QueryRow(ctx, `SELECT count(*) FROM devices`).Scan(&count); err != nil || count != n {
			b.Fatalf("devices: %d, %v; want %d", count, err, n)
		}

		copyRate := float64(n) / copyTime.Seconds()
		importRate := float64(n) / importTime.Seconds()
		b.ReportMetric(importRate, "import-rows/s")
		b.ReportMetric(copyRate, "copy-rows/s")
		b.ReportMetric(importRate/copyRate, "ratio")
		b.Logf("%d rows in rounds of %d, batches of %d: import %.0f rows/s (%v), plain COPY %.0f rows/s (%v), ratio %.2f (goal 0.70)",
			n, round, batch, importRate, importTime.Round(time.Millisecond), copyRate, copyTime.Round(time.Millisecond), importRate/copyRate)
		owner.Close(ctx)
		db.Close()
	}
}
