// Package testenv gives tests the real services they need. Redis, etcd and
// PostgreSQL are started outside the test binary (scripts/testenv.sh, called
// by `make test` and .ci/run) and found through environment variables; a
// Kafka-protocol broker is started in-process with kfake.
//
// When a service is missing a test is skipped, except in CI (CI=true), where
// a missing service fails the test: CI must never pass by skipping.
package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Environment variables set by scripts/testenv.sh.
const (
	EnvRedis    = "HUBUIM_TEST_REDIS_ADDR"     // host:port
	EnvEtcd     = "HUBUIM_TEST_ETCD_ENDPOINTS" // comma-separated
	EnvPostgres = "HUBUIM_TEST_POSTGRES_DSN"   // postgres://...
)

func need(tb testing.TB, env, what string) string {
	tb.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	msg := what + " not available: set " + env + " (scripts/testenv.sh start prints it)"
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
	return ""
}

// RedisAddr returns the test Redis address.
func RedisAddr(tb testing.TB) string {
	tb.Helper()
	return need(tb, EnvRedis, "redis")
}

// EtcdEndpoints returns the test etcd endpoints.
func EtcdEndpoints(tb testing.TB) []string {
	tb.Helper()
	return strings.Split(need(tb, EnvEtcd, "etcd"), ",")
}

// PostgresDSN returns the DSN of a test PostgreSQL server.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	return need(tb, EnvPostgres, "postgresql")
}

// NeedBinary skips the test when the program name is not installed, or
// fails it in CI (CI=true), where every service's binary must be there.
// hint says how to install it.
func NeedBinary(tb testing.TB, name, hint string) {
	tb.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	msg := name + " not installed (" + hint + ")"
	if os.Getenv("CI") != "" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}
