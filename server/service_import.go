package server

import (
	"context"
	"strings"

	"github.com/dvrhotline/hotline/agent/clip"
	"github.com/dvrhotline/hotline/proto/hotline/importfile"
)

// Bulk import's policy: who may import, and what options are valid. The
// import itself (validation, batches, the audit event) is ImportSession;
// the transport feeds it the client's rows.

// maxFileNameLen bounds ImportSource.FileName, in characters.
const maxFileNameLen = 255

// ImportSource describes the file an import reads, as the client states
// it. The server never sees the file: these are notes for the server log,
// checked so that a log line cannot be forged through them.
type ImportSource struct {
	// FileName is the file's name; only its base name is kept.
	FileName string
	// Format is importfile.FormatCSV, importfile.FormatJSONLines, or ""
	// when the client told it from the content.
	Format string
}

// Import begins a bulk import by a (role provisioner) and returns the
// session the caller feeds rows to (Add) and finishes with the file's
// SHA-256 (Finish). opts.KeyGeneration 0 means the keyring's current
// generation, as in RegisterDevice. Refusals (permission, options) are
// audited as refused imports; an import that begins is audited once, by
// Finish.
//
// The Store must also implement ImportStore (*postgres.DB does); otherwise
// Import is EInternal.
func (s *Service) Import(ctx context.Context, a Actor, opts ImportOptions, src ImportSource) (*ImportSession, error) {
	ev := AuditEvent{Action: ActionImport}
	if err := s.allow(ctx, a, ev); err != nil {
		return nil, err
	}
	if e := s.checkImport(&opts, &src); e != nil {
		return nil, s.refuse(ctx, a, ev, e)
	}
	st, ok := s.Store.(ImportStore)
	if !ok {
		return nil, Errorf(EInternal, "store does not support import")
	}
	models, err := s.Store.Models(ctx)
	if err != nil {
		return nil, Internal(err, "reading the model catalogue")
	}
	sess, err := NewImportSession(ctx, st, a, models, opts)
	if err != nil {
		return nil, s.refuseInvalid(ctx, a, ev, err)
	}
	s.log().InfoContext(ctx, "import begun", "import", sess.ID(), "actor", a.Subject,
		"file", src.FileName, "format", src.Format, "update", opts.Update,
		"key_generation", opts.KeyGeneration, "batch_size", opts.BatchSize)
	return sess, nil
}

// checkImport validates an import's options and source notes, filling in
// the key generation.
func (s *Service) checkImport(opts *ImportOptions, src *ImportSource) *Error {
	gen, e := s.keyGeneration("options.key_generation", opts.KeyGeneration)
	if e != nil {
		return e
	}
	opts.KeyGeneration = gen
	opts.MaxRows = s.ImportMaxRows
	if opts.BatchSize < 0 || opts.BatchSize > MaxImportBatchSize {
		return Invalid("options.batch_size", "options.batch_size %d: expected 1 to %d rows (0 for the default, %d)", opts.BatchSize, MaxImportBatchSize, DefaultImportBatchSize)
	}
	switch src.Format {
	case "", importfile.FormatCSV, importfile.FormatJSONLines:
	default:
		return Invalid("options.format", "options.format %q: expected %q, %q or empty", clip.Clip(src.Format, 40), importfile.FormatCSV, importfile.FormatJSONLines)
	}
	if src.FileName != "" {
		if e := checkText("options.file_name", src.FileName, false, maxFileNameLen); e != nil {
			return e
		}
		// The base name alone, whichever system the client runs on.
		src.FileName = src.FileName[strings.LastIndexAny(src.FileName, `/\`)+1:]
	}
	return nil
}
