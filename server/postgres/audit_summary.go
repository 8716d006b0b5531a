package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dvrhotline/hotline/server"
)

// The summary's statements, over [$1, $2). Issuances are counted by
// distinct issuance id, so that an event recorded twice for one issuance
// could never count twice; a supervisor's issuance over a limit has
// "override limit=…" in its detail (Issue). A refusal's reason is the
// first word of its detail: the code the service or the store wrote.
const (
	summaryPerAgentDaySQL = `SELECT date_trunc('day', at AT TIME ZONE 'UTC'), actor,
	count(DISTINCT issuance_id), count(DISTINCT issuance_id) FILTER (WHERE detail LIKE '%override limit=%')
FROM audit_events
WHERE action = 'recovery.issue' AND outcome = 'success' AND at >= $1 AND at < $2
GROUP BY 1, 2 ORDER BY 1, 2`
	summaryRepeatedSQL = `SELECT serial, count(DISTINCT issuance_id), count(DISTINCT actor), min(at), max(at)
FROM audit_events
WHERE action = 'recovery.issue' AND outcome = 'success' AND at >= $1 AND at < $2 AND serial IS NOT NULL
GROUP BY serial HAVING count(DISTINCT issuance_id) >= 2
ORDER BY 2 DESC, serial LIMIT $3`
	forceCustomPlanSQL = `SET LOCAL plan_cache_mode = force_custom_plan`
	summaryRefusalsSQL = `SELECT action, COALESCE(split_part(detail, ' ', 1), ''), count(*), count(DISTINCT actor)
FROM audit_events
WHERE outcome = 'refused' AND at >= $1 AND at < $2
GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`
)

// SummarizeAudit counts the events of [from, to): successful issuances per
// actor per UTC day, devices with two or more, refusals by action and
// reason. The three reads share one REPEATABLE READ snapshot, and the
// summary is recorded (ActionAuditSummary) in the same transaction; the
// reads and the record go in one round trip.
func (db *DB) SummarizeAudit(ctx context.Context, a server.Actor, from, to time.Time) (server.AuditSummary, error) {
	from, to = from.UTC(), to.UTC()
	out := server.AuditSummary{From: from, To: to}
	e := event(a, server.ActionAuditSummary, server.OutcomeSuccess, "")
	e.Detail = "from=" + from.Format(time.RFC3339Nano) + " to=" + to.Format(time.RFC3339Nano)
	err := pgx.BeginTxFunc(ctx, db.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		// Range queries: planned with their values every time, never
		// with the generic plan of a cached statement (see QueryAudit).
		b.Queue(forceCustomPlanSQL)
		b.Queue(summaryPerAgentDaySQL, from, to)
		b.Queue(summaryRepeatedSQL, from, to, server.MaxRepeatedDevices+1)
		b.Queue(summaryRefusalsSQL, from, to)
		b.Queue(insertEventSQL, eventArgs(e)...)
		br := tx.SendBatch(ctx, b)
		defer br.Close()

		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, _ := br.Query()
		var err error
		out.PerAgentDay, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.AgentDayCount, error) {
			var c server.AgentDayCount
			err := r.Scan(&c.Day, &c.Actor, &c.Count, &c.Overrides)
			c.Day = time.Date(c.Day.Year(), c.Day.Month(), c.Day.Day(), 0, 0, 0, 0, time.UTC)
			return c, err
		})
		if err != nil {
			return err
		}
		rows, _ = br.Query()
		out.RepeatedDevices, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.DeviceCount, error) {
			var c server.DeviceCount
			err := r.Scan(&c.Serial, &c.Count, &c.Actors, &c.First, &c.Last)
			c.First, c.Last = c.First.UTC(), c.Last.UTC()
			return c, err
		})
		if err != nil {
			return err
		}
		if len(out.RepeatedDevices) > server.MaxRepeatedDevices {
			out.RepeatedDevices, out.RepeatedTruncated = out.RepeatedDevices[:server.MaxRepeatedDevices], true
		}
		rows, _ = br.Query()
		out.Refusals, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (server.RefusalCount, error) {
			var (
				c      server.RefusalCount
				action string
			)
			err := r.Scan(&action, &c.Reason, &c.Count, &c.Actors)
			c.Action = server.Action(action)
			return c, err
		})
		if err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		return br.Close()
	})
	if err != nil {
		return server.AuditSummary{}, translate(err, "summarising the audit log")
	}
	return out, nil
}
