package mq

import (
	"testing"

	"github.com/IBM/sarama"
	gometrics "github.com/rcrowley/go-metrics"
)

// Sarama's own metrics are no-ops: a histogram it would register in a
// client's registry samples nothing.
func TestSaramaMetricsAreNoOps(t *testing.T) {
	var c KafkaConfig
	sc := c.saramaConfig(sarama.V3_6_0_0)
	h := gometrics.GetOrRegisterHistogram("request-latency-in-ms", sc.MetricRegistry, gometrics.NewUniformSample(16))
	h.Update(42)
	if _, ok := h.(gometrics.NilHistogram); !ok || h.Count() != 0 {
		t.Fatalf("sarama histogram is %T with count %d, want a no-op", h, h.Count())
	}
}
