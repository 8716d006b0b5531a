package grpcserver

import (
	"context"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

type mailServer struct {
	hotlinev1.UnimplementedMailServiceServer
	*handlers
}

func (s mailServer) SendOwnerCode(ctx context.Context, r *hotlinev1.SendOwnerCodeRequest) (*hotlinev1.SendOwnerCodeResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	sent, err := s.svc.SendOwnerCode(ctx, a, r.GetSerial())
	if err != nil {
		return nil, s.fail(ctx, "SendOwnerCode", err)
	}
	m := sent.Mail
	m.To = sent.To
	return &hotlinev1.SendOwnerCodeResponse{ExpiresAt: ts(sent.ExpiresAt), Mail: mailToProto(m)}, nil
}

func (s mailServer) VerifyOwnerCode(ctx context.Context, r *hotlinev1.VerifyOwnerCodeRequest) (*hotlinev1.VerifyOwnerCodeResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.VerifyOwnerCode(ctx, a, r.GetSerial(), r.GetCode()); err != nil {
		return nil, s.fail(ctx, "VerifyOwnerCode", err)
	}
	return &hotlinev1.VerifyOwnerCodeResponse{}, nil
}

func (s mailServer) ListDeliveries(ctx context.Context, r *hotlinev1.ListDeliveriesRequest) (*hotlinev1.ListDeliveriesResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	list, err := s.svc.MailStatuses(ctx, a, r.GetSerial(), int(r.GetPageSize()))
	if err != nil {
		return nil, s.fail(ctx, "ListDeliveries", err)
	}
	resp := &hotlinev1.ListDeliveriesResponse{Deliveries: make([]*hotlinev1.MailDelivery, len(list))}
	for i, m := range list {
		resp.Deliveries[i] = mailToProto(m)
	}
	return resp, nil
}

var mailStateToProto = map[server.MailState]hotlinev1.MailState{
	server.MailQueued:  hotlinev1.MailState_MAIL_STATE_QUEUED,
	server.MailSending: hotlinev1.MailState_MAIL_STATE_SENDING,
	server.MailSent:    hotlinev1.MailState_MAIL_STATE_SENT,
	server.MailFailed:  hotlinev1.MailState_MAIL_STATE_FAILED,
}

func mailToProto(m server.MailStatus) *hotlinev1.MailDelivery {
	return &hotlinev1.MailDelivery{
		MailId: m.ID, Kind: string(m.Kind), Serial: m.Serial, IssuanceId: m.IssuanceID, ToMasked: m.To,
		State: mailStateToProto[m.State], Attempts: int32(m.Attempts), CreatedAt: ts(m.CreatedAt),
		NextAttemptAt: ts(m.NextAttemptAt), FinishedAt: ts(m.FinishedAt), MessageId: m.MessageID, LastReply: m.LastReply,
	}
}
