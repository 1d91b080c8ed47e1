package discovery_test

import (
	"testing"

	"github.com/hubuim/hubuim/internal/discovery"
)

func FuzzDecodeInstance(f *testing.F) {
	f.Add([]byte(`{"id":"c1","service":"comet","addrs":{"grpc":"127.0.0.1:3109"},"conns":3,"draining":true}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"addrs":{"grpc":1}}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ins, err := discovery.DecodeInstance(data)
		if err != nil {
			return
		}
		// Whatever decodes converts into endpoints without panicking.
		_ = discovery.Endpoints([]discovery.Instance{ins})
	})
}
