package grpcserver

import (
	"errors"
	"io"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/dvrhotline/hotline/proto/hotline/importfile"
	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

// maxMalformedLen bounds a client's malformed-row reason (in bytes): it is
// kept in the report, up to server.MaxReportErrors of them.
const maxMalformedLen = 500

var rowKindToProto = map[server.RowErrorKind]hotlinev1.RowErrorKind{
	server.RowInvalid:   hotlinev1.RowErrorKind_ROW_ERROR_KIND_INVALID,
	server.RowDuplicate: hotlinev1.RowErrorKind_ROW_ERROR_KIND_DUPLICATE,
	server.RowConflict:  hotlinev1.RowErrorKind_ROW_ERROR_KIND_CONFLICT,
}

// ImportDevices runs one import per stream: the first message's options
// begin it (Service.Import: role and options), every message's rows go to
// the session in order, and the end of the stream finishes it with the
// SHA-256 the client sent last. A stream that ends in error (the client
// cancelled, a protocol mistake, a batch failed) leaves the batches
// committed so far; the client completes the import by sending the file
// again.
func (s deviceServer) ImportDevices(stream grpc.ClientStreamingServer[hotlinev1.ImportDevicesRequest, hotlinev1.ImportDevicesResponse]) error {
	const method = "ImportDevices"
	ctx := stream.Context()
	a, err := s.actor(ctx)
	if err != nil {
		return err
	}
	msg, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return s.fail(ctx, method, server.Invalid("sha256", "the stream ended before its first message: send the options and rows, and the file's sha256 in the last message"))
	}
	if err != nil {
		return err
	}
	o := msg.GetOptions()
	sess, err := s.svc.Import(ctx, a, server.ImportOptions{
		Update:        o.GetUpdate(),
		KeyGeneration: int(o.GetKeyGeneration()),
		BatchSize:     int(o.GetBatchSize()),
	}, server.ImportSource{FileName: o.GetFileName(), Format: o.GetFormat()})
	if err != nil {
		return s.fail(ctx, method, err)
	}
	var (
		sha256   string
		lastLine int64
	)
	for n := 1; ; n++ {
		if n > 1 {
			msg, err = stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err // the client went away: the committed batches stay
			}
			if msg.GetOptions() != nil {
				return s.fail(ctx, method, server.Invalid("options", "options go in the first message only (message %d has them)", n))
			}
		}
		if sha256 != "" {
			return s.fail(ctx, method, server.Invalid("sha256", "the sha256 goes in the last message only (message %d follows it)", n))
		}
		for _, r := range msg.GetRows() {
			if r.GetLine() <= lastLine {
				return s.fail(ctx, method, server.Invalid("rows.line", "rows.line %d after line %d: expected the file's line numbers, increasing", r.GetLine(), lastLine))
			}
			lastLine = r.GetLine()
			if err := sess.Add(importRowFromProto(r)); err != nil {
				return s.fail(ctx, method, err)
			}
		}
		if h := msg.GetSha256(); h != "" {
			if !isSHA256(h) {
				return s.fail(ctx, method, server.Invalid("sha256", "sha256: expected the file's SHA-256 as 64 hex digits"))
			}
			sha256 = h
		}
	}
	if sha256 == "" {
		return s.fail(ctx, method, server.Invalid("sha256", "sha256 is required in the last message: the file's SHA-256, for the audit event"))
	}
	rep, err := sess.Finish(sha256)
	if err != nil {
		return s.fail(ctx, method, err)
	}
	return stream.SendAndClose(importReportToProto(rep))
}

func importRowFromProto(r *hotlinev1.ImportRow) importfile.Row {
	row := importfile.Row{
		Line:           int(r.GetLine()),
		Serial:         r.GetSerial(),
		Model:          r.GetModel(),
		Firmware:       r.GetFirmware(),
		OwnerContact:   r.GetOwnerContact(),
		ProductionDate: r.GetProductionDate(),
		Malformed:      r.GetMalformed(),
	}
	if len(row.Malformed) > maxMalformedLen {
		n := maxMalformedLen
		for n > 0 && !utf8.RuneStart(row.Malformed[n]) {
			n--
		}
		row.Malformed = row.Malformed[:n] + "…"
	}
	return row
}

func isSHA256(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

func importReportToProto(r server.ImportReport) *hotlinev1.ImportDevicesResponse {
	resp := &hotlinev1.ImportDevicesResponse{
		ImportId:      r.ImportID,
		Received:      int64(r.Received),
		Inserted:      int64(r.Inserted),
		Updated:       int64(r.Updated),
		Unchanged:     int64(r.Unchanged),
		Conflicts:     int64(r.Conflicts),
		Duplicates:    int64(r.Duplicates),
		Invalid:       int64(r.Invalid),
		Batches:       int64(r.Batches),
		Sha256:        r.SHA256,
		ErrorsDropped: int64(r.ErrorsDropped),
		Errors:        make([]*hotlinev1.RowError, len(r.Errors)),
	}
	for i, e := range r.Errors {
		resp.Errors[i] = &hotlinev1.RowError{Line: int64(e.Line), Serial: e.Serial, Kind: rowKindToProto[e.Kind], Reason: e.Reason}
	}
	return resp
}
