package discovery_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hubuim/hubuim/internal/discovery"
)

// TestInstanceIPsJSON: the comet's IP count round-trips, and a value
// published before the field existed decodes with IPs 0.
func TestInstanceIPsJSON(t *testing.T) {
	in := discovery.Instance{ID: "c1", Service: discovery.ServiceComet, Conns: 5, IPs: 3}
	val, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(val), `"ips":3`) {
		t.Fatalf("encoded %s, want an ips field", val)
	}
	got, err := discovery.DecodeInstance(val)
	if err != nil {
		t.Fatal(err)
	}
	if got.IPs != 3 || got.Conns != 5 {
		t.Fatalf("decoded %+v", got)
	}

	old := []byte(`{"id":"c1","service":"comet","addrs":{},"conns":5}`)
	got, err = discovery.DecodeInstance(old)
	if err != nil {
		t.Fatal(err)
	}
	if got.IPs != 0 || got.Conns != 5 {
		t.Fatalf("decoded old value %+v, want ips 0 conns 5", got)
	}

	zero, err := json.Marshal(discovery.Instance{ID: "c1", Service: discovery.ServiceComet})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(zero), "ips") {
		t.Fatalf("encoded %s: a zero IP count must be omitted", zero)
	}
}
