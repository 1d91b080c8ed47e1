package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
)

// Scheme is the gRPC resolver scheme of NewResolverBuilder: a client dials
// "hubuim:///<service>", e.g. "hubuim:///logic".
const Scheme = "hubuim"

// EndpointInfo is attached to each resolved endpoint's Attributes (read it
// with InfoFromEndpoint), for balancers that weigh or prefer regions.
type EndpointInfo struct {
	ID     string
	Region string
	Zone   string
	Weight int
}

type endpointInfoKey struct{}

// InfoFromEndpoint returns the EndpointInfo of an endpoint resolved by a
// hubuim resolver.
func InfoFromEndpoint(ep resolver.Endpoint) (EndpointInfo, bool) {
	info, ok := ep.Attributes.Value(endpointInfoKey{}).(EndpointInfo)
	return info, ok
}

// NewResolverBuilder returns a gRPC resolver.Builder for scheme "hubuim"
// whose targets "hubuim:///<service>" resolve to the AddrGRPC address of
// every instance of service that is not Draining, following w. Pass it
// with grpc.WithResolvers. With no usable instance, RPCs fail with
// Unavailable (or wait, with grpc.WaitForReady) until one appears.
func NewResolverBuilder(w Watcher, logger *slog.Logger) resolver.Builder {
	if logger == nil {
		logger = slog.Default()
	}
	return &resolverBuilder{w: w, log: logger.With("component", "discovery-resolver")}
}

type resolverBuilder struct {
	w   Watcher
	log *slog.Logger
}

func (b *resolverBuilder) Scheme() string { return Scheme }

func (b *resolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.TrimPrefix(target.Endpoint(), "/")
	if err := checkName("service", service); err != nil {
		return nil, fmt.Errorf("discovery: resolver target %q: %w", target.URL.String(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := b.w.Watch(ctx, service)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("discovery: resolve %s: %w", service, err)
	}
	r := &watchResolver{cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		var last []resolver.Endpoint
		first := true
		for list := range ch {
			eps := Endpoints(list)
			// Load updates (Conns) of the instances change nothing here:
			// don't disturb the balancer with them.
			if !first && sameEndpoints(last, eps) {
				continue
			}
			first, last = false, eps
			// An empty list is passed on too (ReportError would keep the
			// old addresses): the balancer drops every connection and
			// RPCs fail with Unavailable.
			if err := cc.UpdateState(resolver.State{Endpoints: eps}); err != nil {
				b.log.Debug("resolver state rejected", "service", service, "err", err)
			}
		}
	}()
	return r, nil
}

// Endpoints converts instances into gRPC endpoints: one per instance that
// has an AddrGRPC address and is not Draining, in list order.
func Endpoints(list []Instance) []resolver.Endpoint {
	eps := make([]resolver.Endpoint, 0, len(list))
	for _, ins := range list {
		addr := ins.Addrs[AddrGRPC]
		if addr == "" || ins.Draining {
			continue
		}
		eps = append(eps, resolver.Endpoint{
			Addresses: []resolver.Address{{Addr: addr}},
			Attributes: attributes.New(endpointInfoKey{}, EndpointInfo{
				ID: ins.ID, Region: ins.Region, Zone: ins.Zone, Weight: ins.Weight,
			}),
		})
	}
	return eps
}

// sameEndpoints compares lists made by Endpoints.
func sameEndpoints(a, b []resolver.Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y resolver.Endpoint) bool {
		xi, _ := InfoFromEndpoint(x)
		yi, _ := InfoFromEndpoint(y)
		return x.Addresses[0].Addr == y.Addresses[0].Addr && xi == yi
	})
}

type watchResolver struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// ResolveNow does nothing: the watch pushes every change.
func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *watchResolver) Close() {
	r.cancel()
	r.wg.Wait()
}
