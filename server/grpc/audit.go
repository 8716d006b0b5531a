package grpcserver

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

// auditServer serves AuditService: the audit log's reads, each one audited
// by the service.
type auditServer struct {
	hotlinev1.UnimplementedAuditServiceServer
	*handlers
}

// pageToken is the opaque keyset cursor of QueryEvents: the last event's
// (time, id) and a digest of the filter, so a token is refused with a
// different filter instead of silently skipping events.
type pageToken struct {
	Time   int64  `json:"t"`
	ID     int64  `json:"i"`
	Filter string `json:"f"`
}

func filterDigest(r *hotlinev1.QueryEventsRequest) string {
	h := sha256.New()
	for _, s := range []string{r.GetSerial(), r.GetActor(), r.GetAction(), r.GetOutcome().String(),
		r.GetStartTime().AsTime().String(), r.GetEndTime().AsTime().String()} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:9])
}

// auditFilter converts the filter fields QueryEvents and ExportEvents
// share.
func auditFilter(serial, actor, action string, outcome hotlinev1.Outcome, start, end *timestamppb.Timestamp) (server.AuditFilter, error) {
	f := server.AuditFilter{Serial: serial, Actor: actor, Action: server.Action(action)}
	switch outcome {
	case hotlinev1.Outcome_OUTCOME_SUCCESS:
		f.Outcome = server.OutcomeSuccess
	case hotlinev1.Outcome_OUTCOME_REFUSED:
		f.Outcome = server.OutcomeRefused
	case hotlinev1.Outcome_OUTCOME_UNSPECIFIED:
	default:
		return f, server.Invalid("outcome", "outcome %d: expected OUTCOME_SUCCESS or OUTCOME_REFUSED", outcome)
	}
	if start != nil {
		f.From = start.AsTime()
	}
	if end != nil {
		f.To = end.AsTime()
	}
	return f, nil
}

func (s auditServer) QueryEvents(ctx context.Context, r *hotlinev1.QueryEventsRequest) (*hotlinev1.QueryEventsResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.Authorize(ctx, a, server.ActionAuditQuery); err != nil {
		return nil, s.fail(ctx, "QueryEvents", err)
	}
	f, err := auditFilter(r.GetSerial(), r.GetActor(), r.GetAction(), r.GetOutcome(), r.GetStartTime(), r.GetEndTime())
	if err != nil {
		return nil, s.fail(ctx, "QueryEvents", err)
	}
	f.Limit = int(r.GetPageSize()) // the service applies the default and the maximum
	digest := filterDigest(r)
	if t := r.GetPageToken(); t != "" {
		var pt pageToken
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err == nil {
			err = json.Unmarshal(b, &pt)
		}
		if err != nil || pt.ID <= 0 {
			return nil, s.fail(ctx, "QueryEvents", server.Invalid("page_token", "page_token: expected a next_page_token from a previous response, unchanged"))
		}
		if pt.Filter != digest {
			return nil, s.fail(ctx, "QueryEvents", server.Invalid("page_token", "page_token belongs to a query with other filters: repeat the same filters, or start again without a token"))
		}
		f.AfterTime, f.AfterID = time.Unix(0, pt.Time).UTC(), pt.ID
	}
	events, more, err := s.svc.QueryAudit(ctx, a, f)
	if err != nil {
		return nil, s.fail(ctx, "QueryEvents", err)
	}
	resp := &hotlinev1.QueryEventsResponse{}
	if more && len(events) > 0 {
		last := events[len(events)-1]
		b, _ := json.Marshal(pageToken{Time: last.Time.UnixNano(), ID: last.ID, Filter: digest})
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(b)
	}
	resp.Events = make([]*hotlinev1.AuditEvent, len(events))
	for i, e := range events {
		resp.Events[i] = eventToProto(e)
	}
	return resp, nil
}

// exportChunk is how many events one ExportEventsResponse carries: small
// enough that the first arrive at once, large enough that the per-message
// cost does not dominate (an event is about 300 bytes).
const exportChunk = 256

func (s auditServer) ExportEvents(r *hotlinev1.ExportEventsRequest, stream grpc.ServerStreamingServer[hotlinev1.ExportEventsResponse]) error {
	ctx := stream.Context()
	a, err := s.actor(ctx)
	if err != nil {
		return err
	}
	if err := s.svc.Authorize(ctx, a, server.ActionAuditExport); err != nil {
		return s.fail(ctx, "ExportEvents", err)
	}
	f, err := auditFilter(r.GetSerial(), r.GetActor(), r.GetAction(), r.GetOutcome(), r.GetStartTime(), r.GetEndTime())
	if err != nil {
		return s.fail(ctx, "ExportEvents", err)
	}
	chunk := &hotlinev1.ExportEventsResponse{Events: make([]*hotlinev1.AuditEvent, 0, exportChunk)}
	flush := func() error {
		if len(chunk.Events) == 0 {
			return nil
		}
		if err := sendWithin(s.handlers, stream, chunk); err != nil {
			return err
		}
		// A new message each time: one that timed out may still be read
		// by the Send left waiting.
		chunk = &hotlinev1.ExportEventsResponse{Events: make([]*hotlinev1.AuditEvent, 0, exportChunk)}
		return nil
	}
	err = s.svc.ExportAudit(ctx, a, f, func(e server.AuditEvent) error {
		chunk.Events = append(chunk.Events, eventToProto(e))
		if len(chunk.Events) == exportChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return s.fail(ctx, "ExportEvents", err)
	}
	return nil
}

func (s auditServer) Summarize(ctx context.Context, r *hotlinev1.SummarizeRequest) (*hotlinev1.SummarizeResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	var from, to time.Time
	if r.GetStartTime() != nil {
		from = r.GetStartTime().AsTime()
	}
	if r.GetEndTime() != nil {
		to = r.GetEndTime().AsTime()
	}
	sum, err := s.svc.SummarizeAudit(ctx, a, from, to)
	if err != nil {
		return nil, s.fail(ctx, "Summarize", err)
	}
	resp := &hotlinev1.SummarizeResponse{
		StartTime: ts(sum.From), EndTime: ts(sum.To), RepeatedDevicesTruncated: sum.RepeatedTruncated,
		IssuancesPerAgentDay: make([]*hotlinev1.AgentDayIssuances, len(sum.PerAgentDay)),
		RepeatedDevices:      make([]*hotlinev1.RepeatedDevice, len(sum.RepeatedDevices)),
		Refusals:             make([]*hotlinev1.RefusalCount, len(sum.Refusals)),
	}
	for i, c := range sum.PerAgentDay {
		resp.IssuancesPerAgentDay[i] = &hotlinev1.AgentDayIssuances{Day: c.Day.Format(time.DateOnly), Actor: c.Actor, Count: c.Count, Overrides: c.Overrides}
	}
	for i, d := range sum.RepeatedDevices {
		resp.RepeatedDevices[i] = &hotlinev1.RepeatedDevice{Serial: d.Serial, Count: d.Count, Actors: d.Actors, FirstTime: ts(d.First), LastTime: ts(d.Last)}
	}
	for i, c := range sum.Refusals {
		resp.Refusals[i] = &hotlinev1.RefusalCount{Action: string(c.Action), Reason: c.Reason, Count: c.Count, Actors: c.Actors}
	}
	return resp, nil
}

func (s auditServer) GetCheckpoint(ctx context.Context, _ *hotlinev1.GetCheckpointRequest) (*hotlinev1.GetCheckpointResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.svc.AuditCheckpoint(ctx, a)
	if err != nil {
		return nil, s.fail(ctx, "GetCheckpoint", err)
	}
	return &hotlinev1.GetCheckpointResponse{Text: c.Text, Size: c.Size, Head: c.Head, Time: ts(c.Time), Kid: c.KID}, nil
}

func (s auditServer) VerifyLog(ctx context.Context, r *hotlinev1.VerifyLogRequest) (*hotlinev1.VerifyLogResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	rep, err := s.svc.VerifyAudit(ctx, a, []byte(r.GetCheckpoint()))
	if err != nil {
		return nil, s.fail(ctx, "VerifyLog", err)
	}
	resp := &hotlinev1.VerifyLogResponse{
		Ok: rep.OK(), Events: rep.Events, Sealed: rep.Sealed, Unsealed: rep.Unsealed,
		CheckpointsVerified: rep.Checkpoints, ExternalCheckpointVerified: rep.External,
		Head: rep.Head, ElapsedMs: rep.Elapsed.Milliseconds(),
	}
	if p := rep.Problem; p != nil {
		resp.FirstProblem = &hotlinev1.VerifyProblem{Kind: p.Kind, Seq: p.Seq, EventId: p.EventID, Message: p.Message}
	}
	for _, p := range rep.Problems {
		resp.Problems = append(resp.Problems, &hotlinev1.VerifyProblem{Kind: p.Kind, Seq: p.Seq, EventId: p.EventID, Message: p.Message})
	}
	resp.ProblemsTruncated, resp.WitnessCheckpointVerified = rep.ProblemsTruncated, rep.Witnessed
	return resp, nil
}
