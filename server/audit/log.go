package audit

import (
	"context"
	"crypto/ed25519"
	"errors"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// LogDB is what Log reads through: *pgxpool.Pool is one.
type LogDB interface {
	DB
	Querier
}

// Log is server.AuditLog on PostgreSQL: Verify and Latest behind the
// service's interface, with the keyring's audit public keys.
//
// In hotline-server it is built next to the sealer:
//
//	svc.AuditLog = &audit.Log{DB: pool, Trusted: func() map[string]ed25519.PublicKey {
//		return kr.PublicKeys(keyring.PurposeAudit, time.Now(), audit.TrustForever)
//	}}
type Log struct {
	// DB is the database (the service role may read the audit tables).
	DB LogDB
	// Trusted returns the audit public keys by kid, retired ones included
	// (the checkpoints they signed stay valid); called on every Verify so
	// that a rotation is seen without a restart.
	Trusted func() map[string]ed25519.PublicKey
	// Grace is Verify's grace period (DefaultGrace if 0).
	Grace time.Duration
	// Witness, when set, is where the sealer publishes its checkpoints:
	// Verify also checks the chain against its last one.
	Witness Witness
}

// TrustForever is the grace after retirement to give the keyring's
// PublicKeys for audit keys: a retired audit key still verifies the
// checkpoints it signed.
const TrustForever = time.Duration(1<<63 - 1)

var _ server.AuditLog = (*Log)(nil)

// Verify implements server.AuditLog.
func (l *Log) Verify(ctx context.Context, external []byte) (server.AuditReport, error) {
	var trusted map[string]ed25519.PublicKey
	if l.Trusted != nil {
		trusted = l.Trusted()
	}
	var ext *Checkpoint
	if len(external) > 0 {
		c, err := ParseCheckpoint(external)
		if err != nil {
			return server.AuditReport{}, server.Invalid("checkpoint", "checkpoint: %v (expected the text printed by hotlinectl audit checkpoint)", err)
		}
		if err := c.Verify(trusted); err != nil {
			msg := "checkpoint: its signature does not verify against the server's audit keys: it was altered or is not this log's"
			if errors.Is(err, ErrUnknownKey) {
				msg = "checkpoint: signed by audit key " + c.KID + ", which this server does not trust: it is not this log's checkpoint"
			}
			return server.AuditReport{}, &server.Error{Code: server.EInvalid, Field: "checkpoint", Message: msg, Err: err}
		}
		ext = &c
	}
	var opts []Option
	if l.Grace > 0 {
		opts = append(opts, WithGrace(l.Grace))
	}
	if l.Witness != nil {
		w, ok, err := l.Witness.Last(ctx, trusted)
		if err != nil {
			return server.AuditReport{}, err
		}
		if ok {
			opts = append(opts, WithPublished(w))
		}
	}
	r, err := Verify(ctx, l.DB, trusted, ext, opts...)
	if err != nil {
		return server.AuditReport{}, err
	}
	out := server.AuditReport{
		Events: r.Events, Sealed: r.Sealed, Unsealed: r.Unsealed, Checkpoints: int64(r.Checkpoints),
		External: r.External, Head: r.Head.String(), Elapsed: r.Elapsed,
		ProblemsTruncated: r.Truncated, Witnessed: r.Published,
	}
	for _, p := range r.Problems {
		out.Problems = append(out.Problems, server.AuditProblem{Kind: string(p.Kind), Seq: p.Seq, EventID: p.EventID, Message: p.Message})
	}
	if len(out.Problems) > 0 {
		out.Problem = &out.Problems[0]
	}
	return out, nil
}

// LatestCheckpoint implements server.AuditLog.
func (l *Log) LatestCheckpoint(ctx context.Context) (server.AuditCheckpoint, bool, error) {
	c, ok, err := Latest(ctx, l.DB)
	if err != nil || !ok {
		return server.AuditCheckpoint{}, ok, err
	}
	text, _ := c.MarshalText()
	return server.AuditCheckpoint{Text: string(text), Size: c.Size, Head: c.Head.String(), Time: c.Time, KID: c.KID}, true, nil
}
