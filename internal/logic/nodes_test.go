package logic_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/discovery"
	"github.com/hubuim/hubuim/internal/logic"
)

func comet(id, region string, lat, lon float64, weight int, conns int64) discovery.Instance {
	return discovery.Instance{ID: id, Service: discovery.ServiceComet, Region: region, Lat: lat, Lon: lon, Weight: weight, Conns: conns,
		Addrs: map[string]string{discovery.AddrTCP: id + ":3101", discovery.AddrWS: id + ":3102"}}
}

func ids(r *pb.NodesReply) []string {
	var out []string
	for _, n := range r.Nodes {
		out = append(out, n.Id)
	}
	return out
}

func TestNodesOrder(t *testing.T) {
	e := newEnv(t, logic.Config{Nodes: logic.NodesConfig{
		Max:     3,
		Regions: []logic.RegionCIDR{{CIDR: "10.0.0.0/8", Region: "eu"}, {CIDR: "10.1.0.0/16", Region: "us"}},
	}}, nil, nil)
	draining := comet("drain", "eu", 48.8, 2.3, 1, 0)
	draining.Draining = true
	noAddr := comet("noaddr", "eu", 48.8, 2.3, 1, 0)
	noAddr.Addrs = map[string]string{discovery.AddrGRPC: "x:3109"}
	e.watcher.ch <- []discovery.Instance{
		comet("paris-busy", "eu", 48.85, 2.35, 1, 900),
		comet("paris-big", "eu", 48.85, 2.35, 10, 1000), // 100 per unit of weight
		comet("berlin", "eu", 52.5, 13.4, 1, 50),
		comet("nyc", "us", 40.7, -74.0, 1, 0),
		comet("sf", "us", 37.8, -122.4, 2, 10),
		draining, noAddr,
	}
	eventually(t, "comets", func() bool { return len(e.l.Comets()) == 7 })

	cases := []struct {
		name string
		req  *pb.NodesReq
		want []string
	}{
		{"by region, least loaded first", &pb.NodesReq{Region: "eu"}, []string{"berlin", "paris-big", "paris-busy"}},
		{"other region", &pb.NodesReq{Region: "US"}, []string{"nyc", "sf", "berlin"}},
		// Berlin is ~880 km from Paris: outside the 500 km band, so after
		// the Paris comets however loaded they are.
		{"by coordinates near Paris", &pb.NodesReq{Lat: 48.9, Lon: 2.4}, []string{"paris-big", "paris-busy", "berlin"}},
		{"by coordinates near NYC", &pb.NodesReq{Lat: 40.0, Lon: -75.0}, []string{"nyc", "sf", "paris-big"}},
		{"by IP, longest prefix", &pb.NodesReq{ClientIp: "10.1.2.3"}, []string{"nyc", "sf", "berlin"}},
		{"by IP", &pb.NodesReq{ClientIp: "10.9.9.9"}, []string{"berlin", "paris-big", "paris-busy"}},
		{"unknown client: least loaded", &pb.NodesReq{ClientIp: "192.168.1.1"}, []string{"nyc", "sf", "berlin"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := e.l.Nodes(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(rep); !slices.Equal(got, tc.want) {
				t.Fatalf("nodes = %v, want %v", got, tc.want)
			}
		})
	}
	rep, _ := e.l.Nodes(&pb.NodesReq{})
	if rep.HeartbeatMs != 30000 || rep.HeartbeatMax != 3 || rep.Backoff.GetBaseDelayMs() != 1000 || rep.Backoff.GetMaxDelayMs() != 60000 || rep.Nodes[0].TcpAddr == "" {
		t.Fatalf("reply = %+v", rep)
	}
	for _, n := range ids(rep) {
		if n == "drain" || n == "noaddr" {
			t.Fatalf("%s listed", n)
		}
	}
}

func TestNodesHTTPAndGRPC(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{Nodes: logic.NodesConfig{Domain: "im.example.com"}})
	h.watcher.ch <- []discovery.Instance{comet("a", "eu", 0, 0, 1, 5), comet("b", "us", 0, 0, 1, 1)}
	eventually(t, "comets", func() bool { return len(h.l.Comets()) == 2 })
	status, r := h.do(t, http.MethodGet, "/goim/nodes/weighted?region=eu&platform=web", "", nil)
	var data struct {
		Domain string `json:"domain"`
		Nodes  []struct {
			ID      string `json:"id"`
			TCPAddr string `json:"tcp_addr"`
			WSAddr  string `json:"ws_addr"`
		} `json:"nodes"`
		HeartbeatMs int64 `json:"heartbeat_ms"`
		Backoff     struct {
			Factor float64 `json:"factor"`
		} `json:"backoff"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		t.Fatal(err)
	}
	if status != 200 || data.Domain != "im.example.com" || len(data.Nodes) != 2 || data.Nodes[0].ID != "a" ||
		data.Nodes[0].TCPAddr != "a:3101" || data.Nodes[0].WSAddr != "a:3102" || data.HeartbeatMs != 30000 || data.Backoff.Factor != 1.6 {
		t.Fatalf("nodes/weighted: %d %s", status, r.Data)
	}

	push := pb.NewPushClient(h.grpcClient(t))
	rep, err := push.Nodes(context.Background(), &pb.NodesReq{Region: "us"})
	if err != nil || len(rep.Nodes) != 2 || rep.Nodes[0].Id != "b" {
		t.Fatalf("gRPC Nodes = %v, %v", rep, err)
	}
}

func TestGRPCPushService(t *testing.T) {
	h := newHTTPEnv(t, logic.Config{})
	push := pb.NewPushClient(h.grpcClient(t))
	ctx := context.Background()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testSecret)
	wrong := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer nope")

	for _, c := range []context.Context{ctx, wrong} {
		if _, err := push.PushKeys(c, &pb.PushKeysReq{Op: 1000, Keys: []string{"dev-1"}}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("PushKeys without credential: %v", err)
		}
		if _, err := push.OnlineTotal(c, &pb.OnlineTotalReq{}); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("OnlineTotal without credential: %v", err)
		}
	}
	if _, err := push.PushKeys(authed, &pb.PushKeysReq{Op: 1000, Keys: []string{"dev-1", "dev-3"}, Msg: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if recs := h.producer.take(); len(recs) != 2 {
		t.Fatalf("PushKeys published %d records, want 2", len(recs))
	}
	if _, err := push.PushMids(authed, &pb.PushMidsReq{Op: 1000, Mids: []int64{8}}); err != nil {
		t.Fatal(err)
	}
	if recs := h.producer.take(); len(recs) != 1 || !slices.Equal(recs[0].msg.Keys, []string{"dev-2"}) {
		t.Fatalf("PushMids records = %+v", recs)
	}
	if _, err := push.PushRoom(authed, &pb.PushRoomReq{Op: 1000, Type: "live", Room: "9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := push.PushAll(authed, &pb.PushAllReq{Op: 1000}); err != nil {
		t.Fatal(err)
	}
	if recs := h.producer.take(); len(recs) != 2 || recs[0].msg.Room != "live://9" || recs[1].msg.Type != pb.PushMsg_BROADCAST {
		t.Fatalf("room/all records = %+v", recs)
	}
	for name, err := range map[string]error{
		"op":   func() error { _, err := push.PushAll(authed, &pb.PushAllReq{Op: 999}); return err }(),
		"keys": func() error { _, err := push.PushKeys(authed, &pb.PushKeysReq{Op: 1000}); return err }(),
		"size": func() error {
			_, err := push.PushAll(authed, &pb.PushAllReq{Op: 1000, Msg: make([]byte, 17<<10)})
			return err
		}(),
		"roomTyp": func() error { _, err := push.PushRoom(authed, &pb.PushRoomReq{Op: 1000, Room: "1"}); return err }(),
		"top":     func() error { _, err := push.OnlineTop(authed, &pb.OnlineTopReq{Type: "live"}); return err }(),
	} {
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
	_ = h.store.SetRoomCounts(ctx, "comet-1", map[string]int32{"live://1": 4}, 60e9)
	top, err := push.OnlineTop(authed, &pb.OnlineTopReq{Type: "live", Limit: 5})
	if err != nil || len(top.Rooms) != 1 || top.Rooms[0].RoomId != "1" || top.Rooms[0].Count != 4 {
		t.Fatalf("OnlineTop = %v, %v", top, err)
	}
	rooms, err := push.OnlineRoom(authed, &pb.OnlineRoomReq{Type: "live", Rooms: []string{"1", "2"}})
	if err != nil || rooms.Rooms["1"] != 4 || rooms.Rooms["2"] != 0 {
		t.Fatalf("OnlineRoom = %v, %v", rooms, err)
	}
}
