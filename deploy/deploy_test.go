package deploy

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// overlays are the deployable kustomizations and what each may reference
// without rendering it. Keep prod's list in step with docs/deploy.md
// ("Secrets the prod overlay expects").
var overlays = []struct {
	dir    string
	policy policy
	// deployments that must be rendered (beyond comet, logic, job).
	deps []string
}{
	{dir: "overlays/dev", deps: []string{"redis", "etcd", "postgres", "kafka"}},
	{dir: "overlays/prod", policy: policy{
		externalSecrets: map[string]bool{"hubuim-secrets": true, "comet-tls": true},
		pinnedImages:    true,
	}},
}

func TestOverlays(t *testing.T) {
	for _, ov := range overlays {
		t.Run(strings.TrimPrefix(ov.dir, "overlays/"), func(t *testing.T) {
			o := render(t, filesys.MakeFsOnDisk(), ov.dir)
			if err := check(o, ov.policy); err != nil {
				t.Errorf("manifest problems:\n%v", err)
			}
			for _, name := range append([]string{"comet", "logic", "job"}, ov.deps...) {
				if o.deploymentBy[name] == nil {
					t.Errorf("Deployment %s is not rendered", name)
				}
			}
			for _, name := range []string{"logic", "job"} {
				found := false
				for _, h := range o.HPAs {
					found = found || h.Spec.ScaleTargetRef.Name == name
				}
				if !found {
					t.Errorf("no HorizontalPodAutoscaler for %s", name)
				}
			}
			for _, name := range []string{"comet", "logic", "job"} {
				found := false
				for _, np := range o.NetPolicies {
					found = found || np.Name == name && len(o.selected(&np.Spec.PodSelector, t.Errorf, "")) == 1 && o.selected(&np.Spec.PodSelector, t.Errorf, "")[0].Name == name
				}
				if !found {
					t.Errorf("no NetworkPolicy %s selecting Deployment %s", name, name)
				}
			}
			for _, name := range []string{"comet", "logic", "job"} {
				found := false
				for _, p := range o.PDBs {
					found = found || p.Name == name
				}
				if !found {
					t.Errorf("no PodDisruptionBudget %s", name)
				}
			}
			if cm := o.configMap("hubuim-grafana-dashboard"); cm == nil || cm.Labels["grafana_dashboard"] != "1" || !json.Valid([]byte(cm.Data["hubuim.json"])) {
				t.Error("no labelled ConfigMap hubuim-grafana-dashboard with the dashboard JSON")
			}
			checkServiceConfigs(t, o)
		})
	}
}

// TestProdHasNoSecrets: production secrets never come from git.
func TestProdHasNoSecrets(t *testing.T) {
	o := render(t, filesys.MakeFsOnDisk(), "overlays/prod")
	for _, s := range o.Secrets {
		t.Errorf("prod overlay renders Secret %s: production secrets must be created outside git", s.Name)
	}
}

// TestCometExposure: the dev overlay reaches comet through a NodePort,
// prod through a LoadBalancer with TLS ports; gRPC stays internal.
func TestCometExposure(t *testing.T) {
	for _, tc := range []struct {
		dir       string
		edgeType  string
		edgePorts []string
	}{
		{"overlays/dev", "NodePort", []string{"tcp", "ws"}},
		{"overlays/prod", "LoadBalancer", []string{"tcp", "ws", "wss", "tcp-tls"}},
	} {
		o := render(t, filesys.MakeFsOnDisk(), tc.dir)
		for _, s := range o.Services {
			var names []string
			for _, p := range s.Spec.Ports {
				names = append(names, p.Name)
			}
			slices.Sort(names)
			slices.Sort(tc.edgePorts)
			switch s.Name {
			case "comet":
				if string(s.Spec.Type) != tc.edgeType || strings.Join(names, ",") != strings.Join(tc.edgePorts, ",") {
					t.Errorf("%s: Service comet is %s with ports %v, want %s with %v", tc.dir, s.Spec.Type, names, tc.edgeType, tc.edgePorts)
				}
			default:
				if s.Spec.Type != "ClusterIP" && s.Spec.Type != "" {
					t.Errorf("%s: Service %s is %s: only comet's client ports leave the cluster", tc.dir, s.Name, s.Spec.Type)
				}
			}
		}
	}
}

// The checks must catch what they claim to: each case breaks a small
// valid kustomization in one way.
const (
	miniKustomization = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: test
resources: [app.yaml]
configMapGenerator:
  - name: app-config
    literals: [a=b]
`
	miniApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app, peer: app}
    spec:
      containers:
        - name: app
          image: example/app:v1
          ports:
            - {name: http, containerPort: 8080}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
          livenessProbe:
            httpGet: {path: /healthz, port: http}
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {cpu: "1", memory: 128Mi}
          volumeMounts:
            - {name: config, mountPath: /etc/app}
      volumes:
        - name: config
          configMap: {name: app-config}
---
apiVersion: v1
kind: Service
metadata:
  name: app
spec:
  selector: {app: app}
  ports:
    - {name: http, port: 80, targetPort: http}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: app
spec:
  maxUnavailable: 1
  selector:
    matchLabels: {app: app}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: app
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource:
        name: cpu
        target: {type: Utilization, averageUtilization: 70}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: app
spec:
  podSelector:
    matchLabels: {app: app}
  policyTypes: [Ingress]
  ingress:
    - from:
        - podSelector:
            matchLabels: {peer: app}
      ports:
        - port: http
`
)

func TestEnvNames(t *testing.T) {
	type inner struct {
		B string `yaml:"b_field"`
	}
	type cfg struct {
		A      string        `yaml:"a"`
		Inner  inner         `yaml:"inner"`
		Inline inner         `yaml:",inline"`
		D      time.Duration `yaml:"d"`
		Skip   string        `yaml:"-"`
		Plain  int
	}
	got := envNames(t, "P", reflect.TypeFor[cfg]())
	want := map[string]bool{"P_A": true, "P_INNER_B_FIELD": true, "P_B_FIELD": true, "P_D": true, "P_PLAIN": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("envNames = %v, want %v", got, want)
	}
}

func TestChecksCatchMistakes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new string // replaced in miniApp
		policy   policy
		want     string // in the render or check error; "" = valid
	}{
		{name: "valid"},
		{name: "misspelled field", old: "maxUnavailable: 1", new: "maxUnavailabel: 1", want: "unknown field"},
		{name: "wrong case field", old: "containerPort: 8080", new: "containerport: 8080", want: "unknown field"},
		{name: "duplicate field", old: "image: example/app:v1", new: "image: example/app:v1\n          image: example/app:v2", want: "image"},
		{name: "unknown kind", old: "kind: PodDisruptionBudget", new: "kind: PodDisruptionBudjet", want: "unexpected apiVersion/kind"},
		{name: "service target port", old: "targetPort: http", new: "targetPort: web", want: "targets web"},
		{name: "service selector", old: "selector: {app: app}", new: "selector: {app: other}", want: "matches no Deployment"},
		{name: "probe port", old: "httpGet: {path: /readyz, port: http}", new: "httpGet: {path: /readyz, port: 9999}", want: "readinessProbe port 9999"},
		{name: "missing probe", old: "          livenessProbe:\n            httpGet: {path: /healthz, port: http}\n", new: "", want: "no livenessProbe"},
		{name: "missing configmap", old: "configMap: {name: app-config}", new: "configMap: {name: nope}", want: `ConfigMap "nope"`},
		{name: "missing secret", old: "          volumeMounts:", new: "          env:\n            - name: X\n              valueFrom:\n                secretKeyRef: {name: s, key: k}\n          volumeMounts:", want: `Secret "s" is neither rendered`},
		{name: "allowed external secret", old: "          volumeMounts:", new: "          env:\n            - name: X\n              valueFrom:\n                secretKeyRef: {name: s, key: k}\n          volumeMounts:", policy: policy{externalSecrets: map[string]bool{"s": true}}},
		{name: "hpa target", old: "name: app}\n  minReplicas", new: "name: gone}\n  minReplicas", want: "is not a rendered Deployment"},
		{name: "hpa and replicas", old: "spec:\n  selector:\n    matchLabels: {app: app}", new: "spec:\n  replicas: 2\n  selector:\n    matchLabels: {app: app}", want: "resets the HPA"},
		{name: "hpa range", old: "minReplicas: 1", new: "minReplicas: 5", want: "minReplicas"},
		{name: "pdb selector", old: "maxUnavailable: 1\n  selector:\n    matchLabels: {app: app}", new: "maxUnavailable: 1\n  selector:\n    matchLabels: {app: x}", want: "PodDisruptionBudget app: selector"},
		{name: "no limits", old: "            limits: {cpu: \"1\", memory: 128Mi}\n", new: "", want: "no cpu limit"},
		{name: "request above limit", old: "memory: 64Mi", new: "memory: 1Gi", want: "above its limit"},
		{name: "latest image", old: "example/app:v1", new: "example/app:latest", policy: policy{pinnedImages: true}, want: "not pinned"},
		{name: "untagged image", old: "example/app:v1", new: "registry:5000/app", policy: policy{pinnedImages: true}, want: "not pinned"},
		{name: "nested mounts", old: "          volumeMounts:\n            - {name: config, mountPath: /etc/app}", new: "          volumeMounts:\n            - {name: config, mountPath: /etc/app}\n            - {name: config, mountPath: /etc/app/sub}", want: "are nested"},
		{name: "policy port", old: "        - port: http", new: "        - port: web", want: "admits port web, which Deployment app's containers do not declare"},
		{name: "policy blocks a service port", old: "        - port: http", new: "        - port: 9090", want: "Service app: port http reaches Deployment app, whose NetworkPolicies admit no traffic"},
		{name: "policy by port number", old: "        - port: http", new: "        - port: 8080"},
		{name: "policy peer", old: "matchLabels: {peer: app}", new: "matchLabels: {peer: gone}", want: "peer peer=gone matches no Deployment"},
		{name: "policy selector", old: "  podSelector:\n    matchLabels: {app: app}", new: "  podSelector:\n    matchLabels: {app: none}", want: "NetworkPolicy app: podSelector app=none matches no Deployment"},
		{name: "mount without volume", old: "{name: config, mountPath", new: "{name: cfg, mountPath", want: `volumeMount "cfg"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := miniApp
			if tc.old != "" {
				if !strings.Contains(app, tc.old) {
					t.Fatalf("test case: %q not in the mini manifest", tc.old)
				}
				app = strings.Replace(app, tc.old, tc.new, 1)
			}
			fs := filesys.MakeFsInMemory()
			for name, data := range map[string]string{"/k/kustomization.yaml": miniKustomization, "/k/app.yaml": app} {
				if err := fs.WriteFile(name, []byte(data)); err != nil {
					t.Fatal(err)
				}
			}
			o, err := renderErr(fs, "/k")
			if err == nil {
				err = check(o, tc.policy)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("valid manifest rejected: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted, want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
