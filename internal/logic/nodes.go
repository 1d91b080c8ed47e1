package logic

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
)

const earthRadiusKM = 6371.0

// farTier sorts comets with no usable location after every located one.
const farTier = math.MaxInt32

// watchComets follows the comets until ctx is done, re-watching after an
// error or a closed channel.
func (l *Logic) watchComets(ctx context.Context) {
	for {
		ch, err := l.watcher.Watch(ctx, discovery.ServiceComet)
		if err == nil {
			for list := range ch {
				cp := slices.Clone(list)
				l.comets.Store(&cp)
				l.m.comets.Set(float64(len(cp)))
			}
		} else {
			l.log.Warn("logic: watching comets failed; retrying", "err", err)
		}
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(DefaultWatchRetryPeriod)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Comets returns the comets currently known from discovery (shared; do
// not modify).
func (l *Logic) Comets() []discovery.Instance { return *l.comets.Load() }

// regionOf finds the region of a client IP in nodes.regions (longest
// prefix wins); "" when unknown.
func (l *Logic) regionOf(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	addr = addr.Unmap()
	best, bestBits := "", -1
	for i, p := range l.regions {
		if p.Bits() > bestBits && p.Contains(addr) {
			best, bestBits = l.cfg.Nodes.Regions[i].Region, p.Bits()
		}
	}
	return best
}

// distanceKM is the great-circle distance (haversine).
func distanceKM(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dLat, dLon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKM * math.Asin(math.Sqrt(min(1, a)))
}

func hasClientAddr(in discovery.Instance) bool {
	for _, k := range [...]string{discovery.AddrTCP, discovery.AddrWS, discovery.AddrWSS, discovery.AddrTCPTLS} {
		if in.Addrs[k] != "" {
			return true
		}
	}
	return false
}

type rankedComet struct {
	in   *discovery.Instance
	tier int
	load float64
}

// Nodes returns the comets a client should try, nearest first (by the
// client's region, else its coordinates, else the region of its IP), then
// least loaded (connections per unit of weight). Draining comets and
// comets with a negative weight are left out.
func (l *Logic) Nodes(req *pb.NodesReq) (*pb.NodesReply, error) {
	l.m.nodeRequests.Inc()
	lat, lon := req.GetLat(), req.GetLon()
	useCoords := lat != 0 || lon != 0
	if useCoords && (math.IsNaN(lat) || math.IsNaN(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180) {
		return nil, fmt.Errorf("%w: lat must be in [-90, 90] and lon in [-180, 180]", ErrInvalidArgument)
	}
	region := req.GetRegion()
	if region == "" && !useCoords && req.GetClientIp() != "" {
		region = l.regionOf(req.GetClientIp())
	}
	all := *l.comets.Load()
	ranked := make([]rankedComet, 0, len(all))
	for i := range all {
		in := &all[i]
		if in.Draining || in.Weight < 0 || !hasClientAddr(*in) {
			continue
		}
		r := rankedComet{in: in, load: float64(in.Conns) / float64(max(in.Weight, 1))}
		switch {
		case region != "":
			if !strings.EqualFold(in.Region, region) {
				r.tier = 1
			}
		case useCoords:
			if in.Lat == 0 && in.Lon == 0 {
				r.tier = farTier
			} else {
				r.tier = int(distanceKM(lat, lon, in.Lat, in.Lon) / l.cfg.Nodes.NearKM)
			}
		}
		ranked = append(ranked, r)
	}
	slices.SortFunc(ranked, func(a, b rankedComet) int {
		if c := cmp.Compare(a.tier, b.tier); c != 0 {
			return c
		}
		if c := cmp.Compare(a.load, b.load); c != 0 {
			return c
		}
		return strings.Compare(a.in.ID, b.in.ID)
	})
	if len(ranked) > l.cfg.Nodes.Max {
		ranked = ranked[:l.cfg.Nodes.Max]
	}
	nodes := make([]*pb.Node, len(ranked))
	for i, r := range ranked {
		nodes[i] = &pb.Node{
			Id:         r.in.ID,
			Region:     r.in.Region,
			TcpAddr:    r.in.Addrs[discovery.AddrTCP],
			WsAddr:     r.in.Addrs[discovery.AddrWS],
			WssAddr:    r.in.Addrs[discovery.AddrWSS],
			TcpTlsAddr: r.in.Addrs[discovery.AddrTCPTLS],
		}
	}
	b := l.cfg.Nodes.Backoff
	return &pb.NodesReply{
		Domain:       l.cfg.Nodes.Domain,
		Nodes:        nodes,
		HeartbeatMs:  l.cfg.Conn.Heartbeat.Milliseconds(),
		HeartbeatMax: int64(l.cfg.Conn.HeartbeatMax),
		Backoff: &pb.Backoff{
			MaxDelayMs:  b.Max.Milliseconds(),
			BaseDelayMs: b.Base.Milliseconds(),
			Factor:      b.Factor,
			Jitter:      b.Jitter,
		},
	}, nil
}
