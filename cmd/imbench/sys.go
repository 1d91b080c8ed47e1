package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fdLimit is this process's soft open-files limit (0 if unknown).
func fdLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	return int(l.Cur)
}

// errNoRSS: the server's memory could not be read.
var errNoRSS = errors.New("imbench: server RSS not found")

const (
	kib            = 1 << 10
	metricsTimeout = 5 * time.Second
	rssMetric      = "process_resident_memory_bytes"
)

// serverRSS reads the server's resident memory: from /proc/<pid>/status when
// pid > 0, else from the Prometheus endpoint metricsURL.
func serverRSS(ctx context.Context, pid int, metricsURL string) (int64, error) {
	if pid > 0 {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(rest)
				if len(f) == 0 {
					break
				}
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				return n * kib, nil
			}
		}
		return 0, errNoRSS
	}
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*kib), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), rssMetric+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", rssMetric, err)
			}
			return int64(v), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errNoRSS
}
