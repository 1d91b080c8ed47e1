// Package e2e runs HubuIM in its distributed mode inside one test process:
// real Redis, etcd and PostgreSQL (from scripts/testenv.sh), the in-process
// Kafka-protocol broker, and logics, comets and a job composed exactly as
// cmd/logic, cmd/comet and cmd/job compose them (internal/app, through
// internal/app/apptest), each on its own loopback ports, talking over real
// gRPC, Kafka and etcd. HUBUIM_TEST_LOG=1 shows the nodes' logs.
package e2e

import (
	"testing"
	"time"

	"github.com/hubuim/hubuim/internal/app/apptest"
)

const (
	// partitions of the push and message topics: several, as in
	// production, so that per-key ordering across partitions is exercised.
	partitions = 4
	// progressTimeout bounds waits for a load's progress (hundreds of
	// sends on a loaded 2-core CI machine with the race detector), not for
	// one event.
	progressTimeout = 2 * time.Minute
	// testOp is the push operation the test clients accept.
	testOp = 1000
)

// newEnv is the infrastructure of one test (see apptest.NewEnv).
func newEnv(t testing.TB, opts ...apptest.EnvOption) *apptest.Env {
	t.Helper()
	return apptest.NewEnv(t, append([]apptest.EnvOption{apptest.KafkaPartitions(partitions)}, opts...)...)
}
