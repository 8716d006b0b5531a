package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/dvrhotline/hotline/server"
)

// actorKey carries the authenticated server.Actor in a request context.
type actorKey struct{}

// actorFrom returns the actor the auth interceptor put in ctx.
func actorFrom(ctx context.Context) (server.Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(server.Actor)
	return a, ok
}

// public reports whether a method needs no staff token: gRPC health, so
// that load balancers and probes work. Reflection needs one (see New).
func public(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/")
}

// deadlines gives every call a server-side deadline: lim.UnaryTimeout for
// unary calls, lim.StreamTimeout for streams, or the client's own when it
// is sooner. A call that runs past it is cancelled, its database work
// with it.
func deadlines(lim Limits) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, lim.UnaryTimeout)
		defer cancel()
		return h(ctx, req)
	}
	// A stream handler may be waiting for the client (Recv) rather than
	// on its context: at the deadline the call is answered without it, and
	// ending the call releases the wait.
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		ctx, cancel := context.WithTimeout(ss.Context(), lim.StreamTimeout)
		defer cancel()
		w := middleware.WrapServerStream(ss)
		w.WrappedContext = ctx
		done := make(chan error, 1)
		go func() { done <- h(srv, w) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return withReason(codes.DeadlineExceeded, fmt.Sprintf("the call ran past the server's deadline of %s for a stream; split the work", lim.StreamTimeout),
				server.ReasonStreamTimeout)
		}
	}
	return unary, stream
}

// authFunc verifies the "authorization: Bearer <token>" metadata and puts
// the actor (with the peer address) in the context.
func authFunc(v Verifier) auth.AuthFunc {
	return func(ctx context.Context) (context.Context, error) {
		tok, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, withReason(codes.Unauthenticated, `no staff token: send "authorization: Bearer <token>" (hotlinectl: set HOTLINE_TOKEN)`, server.ReasonUnauthenticated)
		}
		a, err := v.Verify(tok)
		if err != nil {
			msg := "staff token refused"
			var e *server.Error
			if errors.As(err, &e) && e.Code == server.EUnauthenticated {
				msg = e.Message
			}
			return nil, withReason(codes.Unauthenticated, msg, server.ReasonUnauthenticated)
		}
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			a.ClientAddr = p.Addr.String()
			if host, _, err := net.SplitHostPort(a.ClientAddr); err == nil {
				a.ClientAddr = host
			}
		}
		noteActor(ctx, a)
		return context.WithValue(ctx, actorKey{}, a), nil
	}
}

// callLog is what the access log learns of a call while it runs: the
// actor, set by the auth interceptor inside it.
type callLog struct{ actor atomic.Pointer[server.Actor] }

// callLogKey carries a call's *callLog.
type callLogKey struct{}

// noteActor records a on the call's access log entry, if it has one.
func noteActor(ctx context.Context, a server.Actor) {
	if l, ok := ctx.Value(callLogKey{}).(*callLog); ok {
		l.actor.Store(&a)
	}
}

// accessLog writes one line per call at its end, as go-grpc-middleware's
// logging interceptor does (the same keys, and its level for each code),
// plus the staff member who made it; payloads never are. It builds the
// line's attributes directly (slog.LogAttrs): the generic field lists
// cost more than the rest of a typical call's logging.
type accessLog struct{ log *slog.Logger }

func (l accessLog) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	cl := &callLog{}
	resp, err := h(context.WithValue(ctx, callLogKey{}, cl), req)
	l.write(ctx, cl, info.FullMethod, "unary", start, err)
	return resp, err
}

func (l accessLog) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	cl := &callLog{}
	w := middleware.WrapServerStream(ss)
	w.WrappedContext = context.WithValue(ss.Context(), callLogKey{}, cl)
	err := h(srv, w)
	typ := "bidi_stream"
	switch {
	case info.IsClientStream && !info.IsServerStream:
		typ = "client_stream"
	case info.IsServerStream && !info.IsClientStream:
		typ = "server_stream"
	}
	l.write(ss.Context(), cl, info.FullMethod, typ, start, err)
	return err
}

func (l accessLog) write(ctx context.Context, cl *callLog, fullMethod, typ string, start time.Time, err error) {
	if errors.Is(err, io.EOF) {
		err = nil
	}
	code := status.Code(err)
	lvl := slog.Level(logging.DefaultServerCodeToLevel(code))
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	service, method := "", strings.TrimPrefix(fullMethod, "/")
	if i := strings.LastIndexByte(method, '/'); i >= 0 {
		service, method = method[:i], method[i+1:]
	}
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("protocol", "grpc"),
		slog.String("grpc.component", "server"),
		slog.String("grpc.service", service),
		slog.String("grpc.method", method),
		slog.String("grpc.method_type", typ))
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		attrs = append(attrs, slog.String("peer.address", p.Addr.String()))
	}
	if a := cl.actor.Load(); a != nil {
		attrs = append(attrs, slog.String("actor", a.Subject), slog.String("role", string(a.Role)))
	}
	attrs = append(attrs, slog.String("grpc.start_time", start.Format(time.RFC3339)))
	if d, ok := ctx.Deadline(); ok {
		attrs = append(attrs, slog.String("grpc.request.deadline", d.Format(time.RFC3339)))
	}
	attrs = append(attrs, slog.String("grpc.code", code.String()))
	if err != nil {
		attrs = append(attrs, slog.String("grpc.error", err.Error()))
	}
	attrs = append(attrs, slog.Float64("grpc.time_ms", float64(time.Since(start).Microseconds())/1000))
	l.log.LogAttrs(ctx, lvl, "finished call", attrs...)
}

// chains returns the unary and stream chains, outermost first.
func chains(log *slog.Logger, v Verifier, m *metrics, lim Limits) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	// Only the call's end is logged, with method, code, duration and
	// actor; payloads never are.
	access := accessLog{log}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p)
		return withReason(codes.Internal, internalMessage, server.ReasonInternal)
	})}
	needsAuth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool { return !public(c.FullMethod()) })
	unaryDeadline, streamDeadline := deadlines(lim)
	unary := []grpc.UnaryServerInterceptor{
		m.unary,
		access.unary,
		unaryDeadline,
		selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authFunc(v)), needsAuth),
		recovery.UnaryServerInterceptor(recoverOpts...),
	}
	stream := []grpc.StreamServerInterceptor{
		m.stream,
		access.stream,
		streamDeadline,
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(authFunc(v)), needsAuth),
		recovery.StreamServerInterceptor(recoverOpts...),
	}
	return unary, stream
}

// metrics counts requests by method and status code and times them.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// byMethod holds each method's *methodMetrics, looked up once: a
	// vector's lookup hashes its label values on every call.
	byMethod sync.Map
}

// methodMetrics are one method's duration histogram and its OK counter.
type methodMetrics struct {
	ok       prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hotline_grpc_requests_total",
			Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hotline_grpc_request_duration_seconds",
			Help:    "gRPC request latency, by method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"method"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.duration} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(method string, start time.Time, err error) {
	v, ok := m.byMethod.Load(method)
	if !ok {
		v, _ = m.byMethod.LoadOrStore(method, &methodMetrics{
			ok:       m.requests.WithLabelValues(method, codes.OK.String()),
			duration: m.duration.WithLabelValues(method),
		})
	}
	mm := v.(*methodMetrics)
	if code := status.Code(err); code == codes.OK {
		mm.ok.Inc()
	} else {
		m.requests.WithLabelValues(method, code.String()).Inc()
	}
	mm.duration.Observe(time.Since(start).Seconds())
}

func (m *metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}
