package grpcserver

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	hotlinev1 "github.com/dvrhotline/hotline/proto/hotline/v1"
	"github.com/dvrhotline/hotline/server"
)

// handlers holds what every service implementation needs.
type handlers struct {
	svc *server.Service
	log *slog.Logger
	// sendTimeout bounds how long one message of a server stream waits
	// for the client to read it (Limits.SendTimeout).
	sendTimeout time.Duration
}

// errSendTimeout ends a server stream whose client stopped reading.
var errSendTimeout = withReason(codes.DeadlineExceeded,
	"the client read nothing for too long: the stream was ended (read it as it comes, or narrow the request)", server.ReasonStreamTimeout)

// sendWithin sends m on a server stream, giving up after h.sendTimeout
// when the client does not read. The call must then end at once: its
// return ends the stream, which releases the Send left waiting.
func sendWithin[T any](h *handlers, stream grpc.ServerStreamingServer[T], m *T) error {
	done := make(chan error, 1)
	go func() { done <- stream.Send(m) }()
	t := time.NewTimer(h.sendTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errSendTimeout
	}
}

// actor returns the authenticated caller; the auth interceptor guarantees
// one on every non-public method.
func (h *handlers) actor(ctx context.Context) (server.Actor, error) {
	a, ok := actorFrom(ctx)
	if !ok {
		return server.Actor{}, withReason(codes.Unauthenticated, "no staff token", server.ReasonUnauthenticated)
	}
	return a, nil
}

// fail maps a service error to a status (see toStatus).
func (h *handlers) fail(ctx context.Context, method string, err error) error {
	return toStatus(ctx, h.log, method, err)
}

type deviceServer struct {
	hotlinev1.UnimplementedDeviceServiceServer
	*handlers
}

func (s deviceServer) RegisterDevice(ctx context.Context, r *hotlinev1.RegisterDeviceRequest) (*hotlinev1.RegisterDeviceResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.svc.RegisterDevice(ctx, a, server.NewDevice{
		Serial: r.GetSerial(), Model: r.GetModel(), OwnerContact: r.GetOwnerContact(),
		Firmware: r.GetFirmware(), KeyGeneration: int(r.GetKeyGeneration()),
	})
	if err != nil {
		return nil, s.fail(ctx, "RegisterDevice", err)
	}
	return &hotlinev1.RegisterDeviceResponse{Device: deviceToProto(v)}, nil
}

func (s deviceServer) LookupDevice(ctx context.Context, r *hotlinev1.LookupDeviceRequest) (*hotlinev1.LookupDeviceResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.svc.LookupDevice(ctx, a, r.GetQuery())
	if err != nil {
		return nil, s.fail(ctx, "LookupDevice", err)
	}
	return &hotlinev1.LookupDeviceResponse{
		Device:              deviceToProto(v),
		RecentIssuanceCount: int32(v.RecentIssuances),
		PerDeviceLimit:      int32(v.PerDeviceLimit),
	}, nil
}

func (s deviceServer) CheckOwner(ctx context.Context, r *hotlinev1.CheckOwnerRequest) (*hotlinev1.CheckOwnerResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	ok, err := s.svc.CheckOwner(ctx, a, r.GetSerial(), r.GetClaimedContact())
	if err != nil {
		return nil, s.fail(ctx, "CheckOwner", err)
	}
	return &hotlinev1.CheckOwnerResponse{Matched: ok}, nil
}

func (s deviceServer) HoldDevice(ctx context.Context, r *hotlinev1.HoldDeviceRequest) (*hotlinev1.HoldDeviceResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	hold, err := s.svc.HoldDevice(ctx, a, r.GetSerial(), r.GetReason())
	if err != nil {
		return nil, s.fail(ctx, "HoldDevice", err)
	}
	return &hotlinev1.HoldDeviceResponse{Hold: holdToProto(&hold)}, nil
}

func (s deviceServer) ReleaseDevice(ctx context.Context, r *hotlinev1.ReleaseDeviceRequest) (*hotlinev1.ReleaseDeviceResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.svc.ReleaseDevice(ctx, a, r.GetSerial(), r.GetReason()); err != nil {
		return nil, s.fail(ctx, "ReleaseDevice", err)
	}
	return &hotlinev1.ReleaseDeviceResponse{}, nil
}

type recoveryServer struct {
	hotlinev1.UnimplementedRecoveryServiceServer
	*handlers
}

func (s recoveryServer) IssueTemporaryPassword(ctx context.Context, r *hotlinev1.IssueTemporaryPasswordRequest) (*hotlinev1.IssueTemporaryPasswordResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	out, err := s.svc.Issue(ctx, a, server.IssueRequest{
		RequestID:      r.GetRequestId(),
		Serial:         r.GetSerial(),
		Ticket:         r.GetTicket(),
		Method:         server.VerificationMethod(r.GetVerificationMethod()),
		MethodNote:     r.GetVerificationNote(),
		OverrideReason: r.GetOverrideReason(),
		RequestCode:    r.GetRequestCode(),
		Delivery:       server.Delivery(r.GetDelivery()),
	})
	if err != nil {
		return nil, s.fail(ctx, "IssueTemporaryPassword", err)
	}
	var mail *hotlinev1.MailDelivery
	if out.Mail != nil {
		mail = mailToProto(*out.Mail)
	}
	return &hotlinev1.IssueTemporaryPasswordResponse{
		Mail:              mail,
		IssuanceId:        out.ID,
		Serial:            out.Serial,
		Sequence:          out.Sequence,
		VoiceCode:         out.VoiceCode,
		VoiceCodePhonetic: out.Phonetic,
		Grant:             out.Grant,
		IssuedAt:          ts(out.IssuedAt),
		ExpiresAt:         ts(out.ExpiresAt),
		KeyGeneration:     int32(out.KeyGeneration),
	}, nil
}

func (s recoveryServer) ListIssuances(ctx context.Context, r *hotlinev1.ListIssuancesRequest) (*hotlinev1.ListIssuancesResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	page, err := s.svc.Issuances(ctx, a, r.GetSerial(), int(r.GetPageSize()), r.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, "ListIssuances", err)
	}
	resp := &hotlinev1.ListIssuancesResponse{
		Issuances:     make([]*hotlinev1.Issuance, len(page.Issuances)),
		NextPageToken: page.NextPageToken,
	}
	for i, iss := range page.Issuances {
		resp.Issuances[i] = issuanceToProto(iss)
	}
	return resp, nil
}

type keyServer struct {
	hotlinev1.UnimplementedKeyServiceServer
	*handlers
}

func (s keyServer) GetGrantKeys(ctx context.Context, _ *hotlinev1.GetGrantKeysRequest) (*hotlinev1.GetGrantKeysResponse, error) {
	a, err := s.actor(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.svc.GrantJWKS(ctx, a)
	if err != nil {
		return nil, s.fail(ctx, "GetGrantKeys", err)
	}
	return &hotlinev1.GetGrantKeysResponse{JwksJson: string(b)}, nil
}

// Conversions from domain to proto.

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

var roleToProto = map[server.Role]hotlinev1.Role{
	server.RoleAgent:       hotlinev1.Role_ROLE_AGENT,
	server.RoleSupervisor:  hotlinev1.Role_ROLE_SUPERVISOR,
	server.RoleAuditor:     hotlinev1.Role_ROLE_AUDITOR,
	server.RoleProvisioner: hotlinev1.Role_ROLE_PROVISIONER,
}

var outcomeToProto = map[server.Outcome]hotlinev1.Outcome{
	server.OutcomeSuccess: hotlinev1.Outcome_OUTCOME_SUCCESS,
	server.OutcomeRefused: hotlinev1.Outcome_OUTCOME_REFUSED,
}

func holdToProto(h *server.Hold) *hotlinev1.Hold {
	if h == nil {
		return nil
	}
	return &hotlinev1.Hold{Reason: h.Reason, By: h.By, Since: ts(h.Since)}
}

func deviceToProto(v server.DeviceView) *hotlinev1.Device {
	d := v.Device
	return &hotlinev1.Device{
		Serial:   d.Serial,
		DeviceId: d.DeviceID,
		Model: &hotlinev1.Model{
			Code:           v.ModelInfo.Code,
			Channels:       int32(v.ModelInfo.Channels),
			Drives:         int32(v.ModelInfo.Drives),
			ShipsWithDrive: v.ModelInfo.ShipsWithDrive,
			Description:    v.ModelInfo.Description,
		},
		ProductionDate:     ts(d.ProductionDate),
		Firmware:           d.Firmware,
		OwnerContactMasked: d.OwnerContact, // masked by the service
		KeyGeneration:      int32(d.KeyGeneration),
		Hold:               holdToProto(d.Hold),
		RegisteredAt:       ts(d.RegisteredAt),
	}
}

func issuanceToProto(i server.Issuance) *hotlinev1.Issuance {
	return &hotlinev1.Issuance{
		IssuanceId:         i.ID,
		RequestId:          i.RequestID,
		Serial:             i.Serial,
		Sequence:           i.Sequence,
		KeyGeneration:      int32(i.KeyGeneration),
		SigningKeyId:       i.SigningKeyID,
		IssuedAt:           ts(i.IssuedAt),
		ExpiresAt:          ts(i.ExpiresAt),
		Actor:              i.Actor,
		ActorRole:          roleToProto[i.ActorRole],
		Ticket:             i.Ticket,
		VerificationMethod: hotlinev1.VerificationMethod(i.Method),
		VerificationNote:   i.MethodNote,
		OverrideReason:     i.OverrideReason,
		RequestCode:        i.RequestCode,
	}
}

func eventToProto(e server.AuditEvent) *hotlinev1.AuditEvent {
	return &hotlinev1.AuditEvent{
		Id:                 e.ID,
		Time:               ts(e.Time),
		Actor:              e.Actor,
		Role:               roleToProto[e.Role],
		ClientAddr:         e.ClientAddr,
		Action:             string(e.Action),
		Outcome:            outcomeToProto[e.Outcome],
		Serial:             e.Serial,
		Ticket:             e.Ticket,
		VerificationMethod: hotlinev1.VerificationMethod(e.Method),
		Reason:             e.Reason,
		RequestId:          e.RequestID,
		IssuanceId:         e.IssuanceID,
		Detail:             strings.TrimSpace(e.Detail),
	}
}
