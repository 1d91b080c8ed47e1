package discovery

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// ServiceConfig is the gRPC default service config for clients dialing
// "hubuim:///<service>": round robin over the resolved instances, with
// client-side health checking (grpc.health.v1, overall server status "").
// An instance whose health server reports NOT_SERVING (see RegisterHealth)
// is skipped until it serves again. Importing this package links
// google.golang.org/grpc/health, which client-side health checking needs.
const ServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":""}}`

// RegisterHealth registers a grpc.health.v1 server on s, serving, and
// returns it: call SetServingStatus("", NOT_SERVING) (or Shutdown) when
// draining so that health-checking clients move away before the instance
// is deregistered.
func RegisterHealth(s *grpc.Server) *health.Server {
	h := health.NewServer()
	healthgrpc.RegisterHealthServer(s, h)
	return h
}
