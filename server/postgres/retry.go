package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/dvrhotline/hotline/server"
)

// IssueAttempts is how many times Issue runs the issuance transaction when
// the database is unreachable (a restart or a failover under way).
const IssueAttempts = 4

// issueBackoff is the pause before the second attempt; it doubles after.
const issueBackoff = 100 * time.Millisecond

// Issue runs the issuance transaction (see issueOnce) and runs it again,
// up to IssueAttempts times within ctx, when the connection was lost or
// refused. That is safe even when the lost transaction had committed: the
// request id makes the issue idempotent, so the next attempt finds the
// committed issuance and answers it as a replay (audited as one), never a
// second sequence number. Any other error, and any refusal, is returned at
// once.
func (db *DB) Issue(ctx context.Context, a server.Actor, req server.IssueRequest, lim server.Limits,
	decide func(server.IssueFacts) (server.IssueDecision, error)) (server.Issuance, error) {
	pause := issueBackoff
	for attempt := 1; ; attempt++ {
		iss, err := db.issueOnce(ctx, a, req, lim, decide)
		if err == nil || attempt == IssueAttempts || !retriable(err) {
			return iss, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return iss, err
		case <-t.C:
		}
		pause *= 2
	}
}

// retriable reports whether err is translate's answer to an unreachable
// database (and not the service's own EUnavailable, like a sequence wrap).
func retriable(err error) bool {
	var se *server.Error
	return errors.As(err, &se) && se.Code == server.EUnavailable && se.Err != nil && unreachable(se.Err)
}
