package discovery_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hubuim/hubuim/internal/discovery"
)

// benchComets is the size of a large comet fleet.
const benchComets = 1000

func benchInstances() []discovery.Instance {
	list := make([]discovery.Instance, benchComets)
	for i := range list {
		list[i] = discovery.Instance{ID: fmt.Sprintf("comet-%04d", i), Service: discovery.ServiceComet,
			Region: "r1", Weight: 1, Conns: 12345,
			Addrs: map[string]string{discovery.AddrGRPC: "10.0.0.1:3109", discovery.AddrTCP: "10.0.0.1:3101"}}
	}
	return list
}

// Decoding one value: done for every instance of a service at each list
// a watcher sends.
func BenchmarkDecodeInstance(b *testing.B) {
	val, err := json.Marshal(benchInstances()[0])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := discovery.DecodeInstance(val); err != nil {
			b.Fatal(err)
		}
	}
}

// Converting a fleet's list into resolver endpoints, once per change.
func BenchmarkEndpoints1000(b *testing.B) {
	list := benchInstances()
	b.ReportAllocs()
	for b.Loop() {
		if eps := discovery.Endpoints(list); len(eps) != benchComets {
			b.Fatal(len(eps))
		}
	}
}
