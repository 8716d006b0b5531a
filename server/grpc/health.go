package grpcserver

import (
	"context"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// LivenessService is the health service name that reports whether the
// process serves at all: SERVING from New until Shutdown, whatever the
// database's state (restarting a pod does not bring a database back).
// The empty name and the hotline.v1 services report readiness: NOT_SERVING
// while WatchDatabase finds the database unreachable.
const LivenessService = "hotline.liveness"

// DefaultCallTimeout is Config.CallTimeout's default.
const DefaultCallTimeout = 20 * time.Second

// callTimeout bounds each unary call by d (DefaultCallTimeout if 0).
func callTimeout(d time.Duration) grpc.UnaryServerInterceptor {
	if d <= 0 {
		d = DefaultCallTimeout
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
			return next(ctx, req)
		}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		resp, err := next(ctx, req)
		if err != nil && ctx.Err() == context.DeadlineExceeded {
			if _, ok := status.FromError(err); !ok {
				err = status.Errorf(codes.DeadlineExceeded, "the server's call deadline (%s) passed", d)
			}
		}
		return resp, err
	}
}

// WatchDatabase runs ping every interval until ctx ends, each bounded by
// the interval, and sets the readiness statuses (the empty service name
// and every hotline.v1 service) to NOT_SERVING while it fails and SERVING
// once it answers again. Load balancers and Kubernetes' readiness probe
// then send no calls to a replica that cannot reach the database.
func (s *Server) WatchDatabase(ctx context.Context, ping func(context.Context) error, every time.Duration) {
	var names []string
	for name := range s.grpc.GetServiceInfo() {
		if !strings.HasPrefix(name, "grpc.") {
			names = append(names, name)
		}
	}
	names = append(names, "")
	last := healthpb.HealthCheckResponse_SERVING
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, every)
		err := ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		st := healthpb.HealthCheckResponse_SERVING
		if err != nil {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if st != last {
			for _, n := range names {
				s.health.SetServingStatus(n, st)
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ServeHealth serves the health service alone, in plaintext, on l: for
// probes (Kubernetes' grpc probe speaks no TLS) on a port that carries no
// API call. It returns when the server stops.
func (s *Server) ServeHealth(l net.Listener) error {
	return s.healthOnly.Serve(l)
}
