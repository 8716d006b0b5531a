package grpcserver

import (
	"context"
	"net"
	"strings"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// LivenessService is the health service name that reports whether the
// process serves at all: SERVING from New until Shutdown, whatever the
// database's state (restarting a pod does not bring a database back).
// The empty name and the hotline.v1 services report readiness: NOT_SERVING
// while WatchDatabase finds the database unreachable.
const LivenessService = "hotline.liveness"

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
