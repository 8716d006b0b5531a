package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/server"
)

// importSerial returns a fresh serial, unique across test runs.
func importSerial() string {
	var r [5]byte
	rand.Read(r[:])
	return fmt.Sprintf("JZ6OES#2017-08-01#3#DVR%X", r)
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDevicesImport(t *testing.T) {
	addr, iss := serve(t)
	prov := token(t, iss, server.RoleProvisioner)

	t.Run("partial/csv-with-a-bad-row", func(t *testing.T) {
		a, bad, b := importSerial(), importSerial(), importSerial()
		file := writeFile(t, "factory-batch.csv", "serial,model,firmware,owner_contact\n"+
			a+",WBXHD082S2T,V3.1.0,jane@example.com\n"+
			bad+",WBX999,V3.1.0,jane@example.com\n"+
			b+",WBXHD041S,V3.1.0,\n")
		code, out, errs := run(t, addr, prov, "devices", "import", file)
		if code != exitPartial {
			t.Fatalf("exit %d, want %d (partial)\nstdout:\n%s\nstderr:\n%s", code, exitPartial, out, errs)
		}
		words := strings.Join(strings.Fields(out), " ") // the counts are a table
		for _, want := range []string{"imported 3 rows", "inserted 2", "unchanged 0", "invalid 1",
			"line 3: " + bad + ": model: unknown model \"WBX999\""} {
			if !strings.Contains(words, want) {
				t.Errorf("stdout lacks %q:\n%s", want, out)
			}
		}
		for _, want := range []string{"importing factory-batch.csv: read", "1 row(s) not imported"} {
			if !strings.Contains(errs, want) {
				t.Errorf("stderr lacks %q:\n%s", want, errs)
			}
		}
		// The good rows landed.
		agent := token(t, iss, server.RoleAgent)
		for _, sn := range []string{a, b} {
			if code, _, errs := run(t, addr, agent, "lookup", sn); code != exitOK {
				t.Errorf("lookup %s after import: %d %s", sn, code, errs)
			}
		}
	})

	t.Run("ok/jsonl-then-reimport-changes-nothing", func(t *testing.T) {
		text := fmt.Sprintf(`{"serial":%q,"model":"WBXHD082S2T","firmware":"V3.1.0","owner_contact":"+44 7700 900789"}`+"\n\n"+
			`{"serial":%q,"model":"WBXHD041S","firmware":"V3.1.0","owner_contact":"","production_date":"2017-08-01"}`+"\n",
			importSerial(), importSerial())
		file := writeFile(t, "list.jsonl", text)
		code, out, errs := run(t, addr, prov, "devices", "import", file, "-o", "json")
		if code != exitOK {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		var rep map[string]any
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("-o json: %v\n%s", err, out)
		}
		sum := sha256.Sum256([]byte(text))
		if rep["inserted"] != "2" || rep["received"] != "2" || rep["sha256"] != hex.EncodeToString(sum[:]) {
			t.Errorf("report %v", rep)
		}
		code, out, errs = run(t, addr, prov, "devices", "import", "--format", "jsonl", file)
		if code != exitOK || !strings.Contains(out, "nothing changed: all 2 rows already registered") {
			t.Errorf("re-import: exit %d\n%s\n%s", code, out, errs)
		}
	})

	t.Run("ok/many-messages-and-batches", func(t *testing.T) {
		// 2500 rows: three messages of at most importChunkRows, three
		// server transactions of --batch 1000.
		var r [3]byte
		rand.Read(r[:])
		var b strings.Builder
		b.WriteString("serial,model,firmware,owner_contact\n")
		for i := range 2500 {
			fmt.Fprintf(&b, "JZ6OES#2017-08-01#3#DVR%X%06d,WBXHD082S2T,V3.1.0,\n", r, i)
		}
		file := writeFile(t, "big.csv", b.String())
		code, out, errs := run(t, addr, prov, "devices", "import", file, "--batch", "1000", "-o", "json")
		if code != exitOK {
			t.Fatalf("exit %d\n%s\n%s", code, out, errs)
		}
		var rep map[string]any
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("-o json: %v\n%s", err, out)
		}
		if rep["inserted"] != "2500" || rep["batches"] != "3" {
			t.Errorf("report %v", rep)
		}
	})

	t.Run("refused/agent", func(t *testing.T) {
		file := writeFile(t, "x.csv", "serial,model,firmware,owner_contact\n"+importSerial()+",WBXHD082S2T,V3.1.0,\n")
		code, _, errs := run(t, addr, token(t, iss, server.RoleAgent), "devices", "import", file)
		if code != exitFailed || !strings.Contains(errs, "permission denied: role \"agent\"") || !strings.Contains(errs, "role provisioner") ||
			strings.Contains(errs, "run the same command again") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("failed/unknown-column", func(t *testing.T) {
		file := writeFile(t, "typo.csv", "serial,model,firmware,owner_contcat\n"+importSerial()+",WBXHD082S2T,V3.1.0,\n")
		code, _, errs := run(t, addr, prov, "devices", "import", file)
		if code != exitFailed || !strings.Contains(errs, `unknown column "owner_contcat"`) || strings.Contains(errs, "run the same command again") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("refused/key-generation-names-the-flag", func(t *testing.T) {
		file := writeFile(t, "x.csv", "serial,model,firmware,owner_contact\n"+importSerial()+",WBXHD082S2T,V3.1.0,\n")
		code, _, errs := run(t, addr, prov, "devices", "import", file, "--key-generation", "7")
		if code != exitFailed || !strings.Contains(errs, "fix --key-generation") || strings.Contains(errs, "run the same command again") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("usage/bad-format", func(t *testing.T) {
		code, _, errs := run(t, addr, prov, "devices", "import", "x.csv", "--format", "xml")
		if code != exitUsage || !strings.Contains(errs, "csv or jsonl") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
	})
}
