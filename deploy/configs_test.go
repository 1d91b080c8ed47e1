package deploy

import (
	"bytes"
	"cmp"
	"io"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/hubuim/hubuim/internal/admin"
	"github.com/hubuim/hubuim/internal/app/cometconf"
	"github.com/hubuim/hubuim/internal/app/jobconf"
	"github.com/hubuim/hubuim/internal/auth"
	"github.com/hubuim/hubuim/internal/config"
	"github.com/hubuim/hubuim/internal/job"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
)

// Placeholders for environment values only known in a running pod.
const (
	placeholderSecret = "placeholder-secret-value-0123456789abcdef" // >= 32 bytes, like a real key
	placeholderPodIP  = "10.0.0.1"
	configFlag        = "-config"
)

// loaded is what the deploy checks need from a service's configuration.
type loaded struct {
	// listen maps each enabled listener's config field to its port.
	listen map[string]int
	// adminPort serves /metrics, /healthz and /readyz.
	adminPort int
	// stop is how long the service may take to stop after SIGTERM.
	stop time.Duration
	// files are paths the service reads (TLS certificates, keys).
	files []string
	// shared are settings that must be equal in every service that has
	// them (e.g. the Redis holding the sessions), by name.
	shared map[string]string
}

// service describes how one HubuIM service loads its configuration.
type service struct {
	name      string
	envPrefix string
	// reference is the documented config file in configs/ (may not exist
	// yet); every key of the deployed file must appear in it.
	reference string
	// cfgType is the struct the file decodes into (for env var names).
	cfgType reflect.Type
	// load loads path with the service's strict loader; environment
	// overrides are already set.
	load func(tb testing.TB, path string) loaded
}

var services = []service{
	{name: "comet", envPrefix: cometconf.EnvPrefix, reference: "../configs/comet.yaml", cfgType: reflect.TypeFor[cometconf.FileConfig](), load: loadComet},
	{name: "logic", envPrefix: logicconf.EnvPrefix, reference: "../configs/logic.yaml", cfgType: reflect.TypeFor[logicconf.FileConfig](), load: loadLogic},
	{name: "job", envPrefix: jobconf.EnvPrefix, reference: "../configs/job.yaml", cfgType: reflect.TypeFor[jobconf.Config](), load: loadJob},
}

func loadComet(tb testing.TB, p string) loaded {
	tb.Helper()
	fc, err := cometconf.Load(p)
	if err != nil {
		tb.Fatalf("cometconf.Load: %v", err)
	}
	// In a cluster comets come and go with their pods: they must register
	// (the node list, job's fan-out) at their pod address.
	if len(fc.Discovery.Endpoints) == 0 {
		tb.Fatalf("comet config: discovery.endpoints: an unregistered comet gets no clients and no pushes")
	}
	if fc.AdvertiseHost == "" {
		tb.Fatalf("comet config: advertise_host must be the pod IP (HUBUIM_COMET_ADVERTISE_HOST from status.podIP)")
	}
	l := loaded{listen: map[string]int{}, stop: fc.DrainTimeout}
	for field, addr := range map[string]string{
		"tcp_addr": fc.TCPAddr, "ws_addr": fc.WSAddr, "wss_addr": fc.WSSAddr,
		"tcp_tls_addr": fc.TCPTLSAddr, "grpc_addr": fc.GRPCAddr,
	} {
		addPort(tb, l.listen, field, addr)
	}
	l.adminPort = mustPort(tb, "admin.addr", fc.Admin.Addr)
	l.files = nonEmpty(fc.TLSCertFile, fc.TLSKeyFile, fc.LogicTLS.CAFile, fc.LogicTLS.CertFile, fc.LogicTLS.KeyFile)
	l.shared = map[string]string{
		"discovery.endpoints": strings.Join(fc.Discovery.Endpoints, ","), "discovery.prefix": fc.Discovery.Prefix,
	}
	return l
}

func loadLogic(tb testing.TB, p string) loaded {
	tb.Helper()
	fc, err := logicconf.Load(p)
	if err != nil {
		tb.Fatalf("logicconf.Load: %v", err)
	}
	if fc.Push.Secret == "" && !fc.Push.Unauthenticated {
		tb.Fatalf("logic config: push.secret is required (HUBUIM_LOGIC_PUSH_SECRET)")
	}
	if len(fc.Discovery.Endpoints) == 0 {
		tb.Fatalf("logic config: discovery.endpoints: without etcd logic has no node list and no leased id worker")
	}
	// auth.New validates the auth section, including the key length.
	v, err := auth.New(fc.Auth, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatalf("logic config: auth: %v", err)
	}
	if c, ok := v.(io.Closer); ok {
		c.Close()
	}
	l := loaded{listen: map[string]int{}, stop: fc.ShutdownTimeout}
	addPort(tb, l.listen, "http_addr", fc.HTTPAddr)
	addPort(tb, l.listen, "grpc_addr", fc.GRPCAddr)
	l.adminPort = mustPort(tb, "admin.addr", fc.Admin.Addr)
	l.files = nonEmpty(fc.Auth.JWT.SecretFile, fc.Auth.JWT.JWKSFile, fc.TLS.CertFile, fc.TLS.KeyFile, fc.TLS.ClientCAFile)
	l.files = append(l.files, fc.Auth.JWT.PublicKeyFiles...)
	l.shared = map[string]string{
		"redis.addrs": strings.Join(fc.Redis.Addrs, ","), "redis.prefix": cmp.Or(fc.Redis.Prefix, "hubuim:"), "redis.db": strconv.Itoa(fc.Redis.DB),
		"discovery.endpoints": strings.Join(fc.Discovery.Endpoints, ","), "discovery.prefix": fc.Discovery.Prefix,
		"kafka.brokers": strings.Join(fc.Kafka.Brokers, ","),
		"postgres.dsn":  fc.Postgres.DSN, "postgres.schema": fc.Postgres.Schema,
	}
	return l
}

func loadJob(tb testing.TB, p string) loaded {
	tb.Helper()
	fc, err := jobconf.Load(p)
	if err != nil {
		tb.Fatalf("jobconf.Load: %v", err)
	}
	if len(fc.Redis.Addrs) == 0 || fc.Postgres.DSN == "" {
		tb.Fatalf("job config: redis.addrs and postgres.dsn (HUBUIM_JOB_POSTGRES_DSN) are required")
	}
	// In a cluster comets come and go with their pods: only etcd works.
	if fc.Discovery.Type != jobconf.DiscoveryEtcd || len(fc.Discovery.Etcd.Endpoints) == 0 {
		tb.Fatalf("job config: discovery must be type etcd with endpoints, got %q %v", fc.Discovery.Type, fc.Discovery.Etcd.Endpoints)
	}
	if slices.Equal(fc.Kafka.Brokers, []string{jobconf.DefaultBroker}) {
		tb.Fatalf("job config: kafka.brokers: a pod cannot use the 127.0.0.1 default")
	}
	drain := cmp.Or(fc.Job.DrainTimeout, job.DefaultDrainTimeout)
	adminStop := cmp.Or(fc.Admin.ShutdownTimeout, admin.DefaultShutdownTimeout)
	return loaded{listen: map[string]int{}, adminPort: mustPort(tb, "admin.addr", fc.Admin.Addr), stop: drain + adminStop,
		shared: map[string]string{
			"redis.addrs": strings.Join(fc.Redis.Addrs, ","), "redis.prefix": cmp.Or(fc.Redis.Prefix, "hubuim:"), "redis.db": strconv.Itoa(fc.Redis.DB),
			"discovery.endpoints": strings.Join(fc.Discovery.Etcd.Endpoints, ","), "discovery.prefix": fc.Discovery.Etcd.Prefix,
			"kafka.brokers": strings.Join(fc.Kafka.Brokers, ","),
			"postgres.dsn":  fc.Postgres.DSN, "postgres.schema": fc.Postgres.Schema,
		}}
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func mustPort(tb testing.TB, field, addr string) int {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("%s %q: %v", field, addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil || n <= 0 {
		tb.Fatalf("%s %q: port must be a fixed number in a pod", field, addr)
	}
	return n
}

func addPort(tb testing.TB, m map[string]int, field, addr string) {
	tb.Helper()
	if addr != "" {
		m[field] = mustPort(tb, field, addr)
	}
}

// checkServiceConfigs finds each HubuIM Deployment, extracts its config
// file from the mounted ConfigMap, loads it with the service's loader under
// the container's environment, and checks the Deployment against it.
func checkServiceConfigs(t *testing.T, o *objects) {
	shared := map[string]map[string]string{} // setting -> service -> value
	defer func() {
		for name, bySvc := range shared {
			var first, firstSvc string
			for svc, v := range bySvc {
				if firstSvc == "" {
					first, firstSvc = v, svc
				} else if v != first {
					t.Errorf("%s differs: %s has %q, %s has %q", name, firstSvc, first, svc, v)
				}
			}
		}
	}()
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			d := o.deploymentBy[svc.name]
			if d == nil {
				t.Fatalf("no Deployment %q rendered", svc.name)
			}
			c := container(t, d, svc.name)
			cfgPath, data := configFile(t, o, d, c)
			checkKeysDocumented(t, svc, data)

			checkEnvNames(t, svc, c)
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, svc.envPrefix+"_") {
					t.Setenv(e.Name, envValue(t, o, e))
				}
			}
			file := filepath.Join(t.TempDir(), path.Base(cfgPath))
			if err := os.WriteFile(file, data, 0o600); err != nil {
				t.Fatal(err)
			}
			l := svc.load(t, file)
			for k, v := range l.shared {
				if shared[k] == nil {
					shared[k] = map[string]string{}
				}
				shared[k][svc.name] = v
			}

			for field, port := range l.listen {
				if !containerHasPort(*c, intstr.FromInt32(int32(port))) {
					t.Errorf("%s %s listens on %d, which the container does not declare", svc.name, field, port)
				}
			}
			checkAdminPort(t, d, c, l.adminPort)
			for _, f := range l.files {
				if !underMount(c, f) {
					t.Errorf("%s reads %s, which is under no volumeMount", svc.name, f)
				}
			}
			grace := time.Duration(30) * time.Second // the API server's default
			if s := d.Spec.Template.Spec.TerminationGracePeriodSeconds; s != nil {
				grace = time.Duration(*s) * time.Second
			}
			need := preStopSleep(c) + l.stop
			if grace < need {
				t.Errorf("%s terminationGracePeriodSeconds %v is below preStop sleep + stop/drain timeout = %v: SIGKILL would cut the drain short", svc.name, grace, need)
			}
		})
	}
}

func container(tb testing.TB, d *appsv1.Deployment, name string) *corev1.Container {
	tb.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c
		}
	}
	tb.Fatalf("Deployment %s has no container %q", d.Name, name)
	return nil
}

// configFile returns the -config path of c and the file's content from the
// ConfigMap volume mounted over it.
func configFile(tb testing.TB, o *objects, d *appsv1.Deployment, c *corev1.Container) (string, []byte) {
	tb.Helper()
	args := append(append([]string{}, c.Command...), c.Args...)
	cfgPath := ""
	for i, a := range args {
		switch {
		case (a == configFlag || a == "-"+configFlag) && i+1 < len(args):
			cfgPath = args[i+1]
		case strings.HasPrefix(a, configFlag+"="):
			cfgPath = strings.TrimPrefix(a, configFlag+"=")
		}
	}
	if cfgPath == "" {
		tb.Fatalf("container %s: no %s argument", c.Name, configFlag)
	}
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(cfgPath, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm := o.configMap(v.ConfigMap.Name)
			if cm == nil {
				tb.Fatalf("container %s: ConfigMap %q is not rendered", c.Name, v.ConfigMap.Name)
			}
			key := rel
			for _, it := range v.ConfigMap.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			data, ok := cm.Data[key]
			if !ok {
				tb.Fatalf("container %s: %s: ConfigMap %s has no key %q", c.Name, cfgPath, cm.Name, key)
			}
			return cfgPath, []byte(data)
		}
	}
	tb.Fatalf("container %s: %s is not on a mounted ConfigMap", c.Name, cfgPath)
	return "", nil
}

// envValue is the value e would have in a pod, or a placeholder of the
// right shape.
func envValue(tb testing.TB, o *objects, e corev1.EnvVar) string {
	tb.Helper()
	switch {
	case e.ValueFrom == nil:
		return e.Value
	case e.ValueFrom.SecretKeyRef != nil:
		if s := o.secret(e.ValueFrom.SecretKeyRef.Name); s != nil {
			if v, ok := s.Data[e.ValueFrom.SecretKeyRef.Key]; ok {
				return string(v)
			}
			return s.StringData[e.ValueFrom.SecretKeyRef.Key]
		}
		return placeholderSecret // an external Secret (allowed by check)
	case e.ValueFrom.ConfigMapKeyRef != nil:
		if cm := o.configMap(e.ValueFrom.ConfigMapKeyRef.Name); cm != nil {
			return cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
		}
	case e.ValueFrom.FieldRef != nil:
		return placeholderPodIP
	}
	tb.Fatalf("env %s: cannot tell its value", e.Name)
	return ""
}

// checkEnvNames fails for HUBUIM_<SERVICE>_* variables that name no config
// field: config.ApplyEnv ignores them, so a typo would silently do nothing.
func checkEnvNames(t *testing.T, svc service, c *corev1.Container) {
	t.Helper()
	valid := envNames(t, svc.envPrefix, svc.cfgType)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, svc.envPrefix+"_") && !valid[e.Name] {
			t.Errorf("env %s names no %s config field", e.Name, svc.name)
		}
	}
}

// envNames lists the variables config.ApplyEnv reads for a t: it asks
// ApplyEnv itself, so the list follows its naming rules exactly.
func envNames(tb testing.TB, prefix string, t reflect.Type) map[string]bool {
	tb.Helper()
	out := map[string]bool{}
	err := config.ApplyEnv(prefix, reflect.New(t).Interface(), func(name string) (string, bool) {
		out[name] = true
		return "", false
	})
	if err != nil {
		tb.Fatalf("ApplyEnv %s: %v", t, err)
	}
	return out
}

// checkKeysDocumented fails for keys of the deployed file that the
// reference file in configs/ does not have: the deployed files then stay a
// subset of what is documented.
func checkKeysDocumented(t *testing.T, svc service, data []byte) {
	t.Helper()
	ref, err := os.ReadFile(svc.reference)
	if os.IsNotExist(err) {
		t.Logf("%s does not exist yet: keys not checked against it", svc.reference)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	refKeys, deployed := map[string]bool{}, map[string]bool{}
	if err := yamlKeys(ref, refKeys); err != nil {
		t.Fatalf("%s: %v", svc.reference, err)
	}
	if err := yamlKeys(data, deployed); err != nil {
		t.Fatalf("deployed %s config: %v", svc.name, err)
	}
	for k := range deployed {
		if !refKeys[k] {
			t.Errorf("deployed %s config key %q is not in %s", svc.name, k, svc.reference)
		}
	}
}

// yamlKeys collects the dotted paths of every mapping key in data.
func yamlKeys(data []byte, out map[string]bool) error {
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil {
		if err == io.EOF {
			return nil
		}
		return err
	}
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, prefix)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if prefix != "" {
					k = prefix + "." + k
				}
				out[k] = true
				walk(n.Content[i+1], k)
			}
		}
	}
	walk(&root, "")
	return nil
}

// checkAdminPort: probes and the Prometheus annotation use the admin port.
func checkAdminPort(t *testing.T, d *appsv1.Deployment, c *corev1.Container, port int) {
	t.Helper()
	resolve := func(p intstr.IntOrString) int {
		if p.Type == intstr.Int {
			return int(p.IntVal)
		}
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort)
			}
		}
		return 0
	}
	for name, pr := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s: %s is not an HTTP probe on the admin port", c.Name, name)
			continue
		}
		if got := resolve(pr.HTTPGet.Port); got != port {
			t.Errorf("%s: %s uses port %d, the admin port is %d", c.Name, name, got, port)
		}
		want := map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"}[name]
		if pr.HTTPGet.Path != want {
			t.Errorf("%s: %s path %q, want %q", c.Name, name, pr.HTTPGet.Path, want)
		}
	}
	if got := d.Spec.Template.Annotations["prometheus.io/port"]; got != strconv.Itoa(port) {
		t.Errorf("%s: prometheus.io/port %q, the admin port is %d", c.Name, got, port)
	}
}

func underMount(c *corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

func preStopSleep(c *corev1.Container) time.Duration {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
}
