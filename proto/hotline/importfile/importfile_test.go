package importfile_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dvrhotline/hotline/proto/hotline/importfile"
)

func TestParseImportFile(t *testing.T) {
	csvFile := "\ufeffSerial , model,firmware,owner_contact,production_date\n" +
		"JZ6OES#2017-08-01#3#DVR1101134C08011,WBXHD082S2T,V3.1.0,jane@example.com,2017-08-01\n" +
		"\n" + // blank lines do not count as rows but do count as lines
		"JZ6OES#2017-08-01#3#DVR1101134C08012,WBXHD041S,\"V3\n.1\",,\n" + // a quoted field spanning two lines
		"only,three,fields\n" +
		"JZ6OES#2017-08-01#3#DVR1101134C08013,WBXHD041S,V3.1.0,+44 7700 900789,\n"
	jsonFile := `{"serial":"JZ6OES#2017-08-01#3#DVR1101134C08011","model":"WBXHD082S2T","firmware":"V3.1.0","owner_contact":"jane@example.com","production_date":"2017-08-01"}` + "\n" +
		"\n" +
		`{"serial":"JZ6OES#2017-08-01#3#DVR1101134C08012","model":"WBXHD041S","firmware":"V3\n.1","owner_contact":""}` + "\n" +
		`{"serial":"x","model":"m","firmware":"f","owner_contact":"","colour":"red"}` + "\n" +
		`  {"serial":"JZ6OES#2017-08-01#3#DVR1101134C08013","model":"WBXHD041S","firmware":"V3.1.0","owner_contact":"+44 7700 900789"}`
	read := func(t *testing.T, in, format string) []importfile.Row {
		t.Helper()
		var rows []importfile.Row
		if err := importfile.Parse(strings.NewReader(in), format, func(r importfile.Row) error {
			rows = append(rows, r)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	want := []importfile.Row{
		{Line: 2, Serial: "JZ6OES#2017-08-01#3#DVR1101134C08011", Model: "WBXHD082S2T", Firmware: "V3.1.0", OwnerContact: "jane@example.com", ProductionDate: "2017-08-01"},
		{Line: 4, Serial: "JZ6OES#2017-08-01#3#DVR1101134C08012", Model: "WBXHD041S", Firmware: "V3\n.1"},
		{Line: 6, Serial: "only", Malformed: "the record has 3 fields, the header 5"},
		{Line: 7, Serial: "JZ6OES#2017-08-01#3#DVR1101134C08013", Model: "WBXHD041S", Firmware: "V3.1.0", OwnerContact: "+44 7700 900789"},
	}
	t.Run("csv/lines-exact", func(t *testing.T) {
		for _, format := range []string{"csv", ""} {
			if got := read(t, csvFile, format); !reflect.DeepEqual(got, want) {
				t.Fatalf("format %q:\ngot  %+v\nwant %+v", format, got, want)
			}
		}
	})
	t.Run("jsonl/lines-exact", func(t *testing.T) {
		for _, format := range []string{"jsonl", ""} {
			got := read(t, jsonFile, format)
			if len(got) != 4 || !strings.Contains(got[2].Malformed, `unknown field "colour"`) || got[2].Line != 4 {
				t.Fatalf("format %q: got %+v", format, got)
			}
			wantJ := []importfile.Row{want[0], {Line: 3, Serial: want[1].Serial, Model: "WBXHD041S", Firmware: "V3\n.1"}, got[2], want[3]}
			wantJ[0].Line, wantJ[3].Line = 1, 5
			if !reflect.DeepEqual(got, wantJ) {
				t.Fatalf("format %q:\ngot  %+v\nwant %+v", format, got, wantJ)
			}
		}
	})
	for _, tt := range []struct{ name, in, want string }{
		{"refused/unknown-column", "serial,model,firmware,owner_contcat\n", `unknown column "owner_contcat"`},
		{"refused/missing-column", "serial,model,firmware\n", `no "owner_contact" column`},
		{"refused/no-header", "JZ6OES#2017-08-01#3#DVR1101134C08011,WBXHD082S2T,V3.1.0,jane@example.com\n", "unknown column"},
		{"refused/empty", "", "empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := importfile.Parse(strings.NewReader(tt.in), "csv", func(importfile.Row) error { return nil })
			var fe *importfile.Error
			if !errors.As(err, &fe) || fe.Field != "file" || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an *importfile.Error of the file saying %q", err, tt.want)
			}
		})
	}
}

func TestParseRefusesUnknownFormat(t *testing.T) {
	err := importfile.Parse(strings.NewReader("serial\n"), "xml", func(importfile.Row) error { return nil })
	var fe *importfile.Error
	if !errors.As(err, &fe) || fe.Field != "format" {
		t.Fatalf("got %v, want an *importfile.Error of the format", err)
	}
}

func TestParseReturnsTheCallbacksError(t *testing.T) {
	stop := errors.New("stop")
	err := importfile.Parse(strings.NewReader("serial,model,firmware,owner_contact\na,b,c,\n"), "", func(importfile.Row) error { return stop })
	if err != stop {
		t.Fatalf("got %v, want the callback's error as is", err)
	}
}
