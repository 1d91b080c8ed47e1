// Package promreg registers Prometheus collectors that several components
// of one process may create under the same names (the standalone mode runs
// logic's and comet's gRPC servers on one registry).
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Shared registers c, or returns the collector already registered under
// its name when that one has c's type.
func Shared[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
