// Command imbench is HubuIM's load generator. Every scenario is bounded in
// count and in time, targets only the addresses it is given (loopback by
// default, matching `go run ./cmd/hubuim`), prints a short summary and,
// with -json, a JSON document.
//
//	imbench conns -n 15000 -transport tcp -hold 30s   idle connections, server memory per connection
//	imbench room  -n 15000 -rate 10 -count 200         room fan-out through the HTTP push API
//	imbench push  -n 1000 -rate 5000 -count 50000      pushes by mid or key through HTTP (or gRPC)
//	imbench chat  -pairs 100 -groups 10 -rate 5000     reliable messages through the SDK
//	imbench kafka -port 19092                          helper: in-memory Kafka-protocol broker (scripts/bench-cluster.sh)
//
// One process holds at most its open-files limit of connections (20,000 on
// the benchmark machine); run several processes with distinct -mid-base
// values for more (see docs/benchmarks.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

// Default targets: the standalone process's listeners.
const (
	defaultTCPAddr    = "127.0.0.1:3101"
	defaultWSAddr     = "127.0.0.1:3102"
	defaultWSPath     = "/sub"
	defaultHTTP       = "http://127.0.0.1:3111"
	defaultGRPC       = "127.0.0.1:3119"
	defaultMetricsURL = "http://127.0.0.1:3900/metrics"
	defaultMaxRun     = 5 * time.Minute // -timeout: upper bound of any run
	defaultBusinessOp = 1000
)

// errFailed: the run finished but its checks failed (exit status 1).
var errFailed = errors.New("imbench: checks failed")

// common are the flags every scenario has.
type common struct {
	tcpAddr   string
	wsAddr    string
	wsPath    string
	transport string
	httpURL   string
	jsonOut   bool
	timeout   time.Duration
	localIPs  string
	midBase   int64
	dialConc  int
	cpuProf   string
	profFile  *os.File
	out       io.Writer
	log       *slog.Logger
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.tcpAddr, "addr", defaultTCPAddr, "comet TCP address")
	fs.StringVar(&c.wsAddr, "ws-addr", defaultWSAddr, "comet WebSocket address")
	fs.StringVar(&c.wsPath, "ws-path", defaultWSPath, "comet WebSocket path")
	fs.StringVar(&c.transport, "transport", "tcp", "client transport: tcp or ws")
	fs.StringVar(&c.httpURL, "http", defaultHTTP, "logic HTTP base URL (push and client API)")
	fs.BoolVar(&c.jsonOut, "json", false, "also print the result as JSON")
	fs.DurationVar(&c.timeout, "timeout", defaultMaxRun, "hard upper bound of the whole run")
	fs.StringVar(&c.localIPs, "local-ips", "", "comma-separated source addresses used round robin (e.g. 127.0.0.2,127.0.0.3)")
	fs.Int64Var(&c.midBase, "mid-base", 0, "first user id (0: a random base, so runs do not collide)")
	fs.IntVar(&c.dialConc, "dial-concurrency", defaultDialConcurrency, "concurrent dials")
	fs.StringVar(&c.cpuProf, "cpuprofile", "", "write imbench's own CPU profile to this file (the load generator's cost)")
}

// addr is the comet address for the chosen transport.
func (c *common) addr() string {
	if c.transport == "ws" {
		return c.wsAddr
	}
	return c.tcpAddr
}

// scenario is one subcommand.
type scenario struct {
	name string
	help string
	run  func(ctx context.Context, args []string, c *common) error
}

var scenarios = []scenario{
	{"conns", "hold N idle connections, report server memory per connection", runConns},
	{"room", "room fan-out through the HTTP push API: delivered msgs/s, latency, missing", runRoom},
	{"push", "pushes by mid/key through HTTP or gRPC: accept and delivery latency", runPush},
	{"chat", "reliable 1:1 and group messages via the SDK: ACK and delivery latency, loss/dup/order", runChat},
	{"kafka", "benchmark helper: an in-memory Kafka-protocol broker (kfake) for the distributed mode", runKafka},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: imbench <scenario> [flags]   (imbench <scenario> -h for its flags)")
	for _, s := range scenarios {
		fmt.Fprintf(w, "  %-6s %s\n", s.name, s.help)
	}
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imbench:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 {
		usage(os.Stderr)
		return errors.New("no scenario")
	}
	for _, s := range scenarios {
		if s.name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		c := &common{out: out, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		defer c.stopProfile()
		return s.run(ctx, args[1:], c)
	}
	usage(os.Stderr)
	return fmt.Errorf("unknown scenario %q", args[0])
}

// parse parses a scenario's flags and applies the common ones: the run's
// context is bounded by -timeout.
func (c *common) parse(ctx context.Context, fs *flag.FlagSet, args []string) (context.Context, context.CancelFunc, error) {
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.transport != "tcp" && c.transport != "ws" {
		return nil, nil, fmt.Errorf("-transport: %w: %q", errTransport, c.transport)
	}
	if c.timeout <= 0 {
		return nil, nil, errors.New("-timeout must be positive")
	}
	if c.midBase == 0 {
		c.midBase = randomMidBase()
	}
	if err := c.startProfile(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return ctx, cancel, nil
}

// startProfile starts the -cpuprofile CPU profile; stopProfile (deferred by
// run) writes it.
func (c *common) startProfile() error {
	if c.cpuProf == "" {
		return nil
	}
	f, err := os.Create(c.cpuProf)
	if err != nil {
		return fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("-cpuprofile: %w", err)
	}
	c.profFile = f
	return nil
}

func (c *common) stopProfile() {
	if c.profFile == nil {
		return
	}
	pprof.StopCPUProfile()
	if err := c.profFile.Close(); err != nil {
		c.log.Warn("imbench: write CPU profile", "err", err)
	}
	c.profFile = nil
}

// randomMidBase picks a user id base far from small hand-made ids, so that
// repeated runs against the same server use fresh users.
func randomMidBase() int64 {
	const (
		span  = 1 << 40
		floor = 1 << 30
	)
	return floor + time.Now().UnixNano()%span
}

func (c *common) rawConfig(roomID string, accepts []int32) rawConfig {
	return rawConfig{Addr: c.addr(), Transport: c.transport, WSPath: c.wsPath, RoomID: roomID, Accepts: accepts}
}
