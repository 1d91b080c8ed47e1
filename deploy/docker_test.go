package deploy

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const dockerfilePath = "docker/Dockerfile"

// stage is one FROM block of the Dockerfile.
type stage struct {
	name, from string
	lines      []string // instructions after FROM, continuation lines joined
}

func parseDockerfile(tb testing.TB) (args map[string]string, stages []*stage) {
	tb.Helper()
	f, err := os.Open(dockerfilePath)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	args = map[string]string{}
	var cur *stage
	var pending string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			pending += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, pending = pending+line, ""
		fields := strings.Fields(line)
		switch strings.ToUpper(fields[0]) {
		case "FROM":
			cur = &stage{from: fields[1]}
			if len(fields) == 4 && strings.EqualFold(fields[2], "AS") {
				cur.name = fields[3]
			}
			stages = append(stages, cur)
		case "ARG":
			if cur == nil {
				k, v, _ := strings.Cut(fields[1], "=")
				args[k] = v
				continue
			}
			fallthrough
		default:
			if cur == nil {
				tb.Fatalf("%s: %q before the first FROM", dockerfilePath, line)
			}
			cur.lines = append(cur.lines, line)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return args, stages
}

// TestDockerfile checks what can be checked without a Docker engine: one
// non-root runtime target per service, binaries built by `make build`, the
// Go version of go.mod, and no secret in the image definition.
func TestDockerfile(t *testing.T) {
	args, stages := parseDockerfile(t)
	byName := map[string]*stage{}
	for _, s := range stages {
		byName[s.name] = s
	}

	build := byName["build"]
	if build == nil {
		t.Fatal("no build stage")
	}
	goMod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m == nil {
		t.Fatal("no go directive in ../go.mod")
	}
	if args["GO_VERSION"] != string(m[1]) {
		t.Errorf("GO_VERSION %q, go.mod says go %s", args["GO_VERSION"], m[1])
	}
	makeBuild := false
	for _, l := range build.lines {
		makeBuild = makeBuild || (strings.HasPrefix(l, "RUN ") && strings.Contains(l, "make build"))
	}
	if !makeBuild {
		t.Error("the build stage must run `make build` so the flags are the Makefile's")
	}

	// Every service image named in the manifests has a runtime target.
	o := render(t, filesys.MakeFsOnDisk(), "overlays/dev")
	for _, svc := range services {
		d := o.deploymentBy[svc.name]
		if d == nil {
			t.Fatalf("no Deployment %s", svc.name)
		}
		s := byName[svc.name]
		if s == nil {
			t.Errorf("no Dockerfile target %q for Deployment %s", svc.name, svc.name)
			continue
		}
		if _, err := os.Stat("../cmd/" + svc.name); err != nil {
			t.Errorf("target %s: no ../cmd/%s to build", svc.name, svc.name)
		}
		var user, entry, copyFrom string
		for _, l := range s.lines {
			f := strings.Fields(l)
			switch strings.ToUpper(f[0]) {
			case "USER":
				user = f[1]
			case "ENTRYPOINT":
				entry = l
			case "COPY":
				if strings.HasPrefix(f[1], "--from=build") {
					copyFrom = f[2]
				}
			}
		}
		if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
			t.Errorf("target %s: USER %q must be a non-root uid", svc.name, user)
		}
		if uid := d.Spec.Template.Spec.SecurityContext.RunAsUser; uid == nil {
			t.Errorf("Deployment %s: no runAsUser", svc.name)
		} else if !strings.HasPrefix(user, strconv.FormatInt(*uid, 10)+":") {
			t.Errorf("target %s: USER %q does not match the pod's runAsUser %d", svc.name, user, *uid)
		}
		if copyFrom != "/out/"+svc.name || !strings.Contains(entry, svc.name) {
			t.Errorf("target %s: copies %q and runs %q, want the %s binary from make build", svc.name, copyFrom, entry, svc.name)
		}
		if s.from != "${RUNTIME_IMAGE}" {
			t.Errorf("target %s: FROM %s, want the shared minimal ${RUNTIME_IMAGE}", svc.name, s.from)
		}
	}
	if !strings.Contains(args["RUNTIME_IMAGE"], "nonroot") {
		t.Errorf("RUNTIME_IMAGE %q: want a nonroot distroless image", args["RUNTIME_IMAGE"])
	}

	secretish := regexp.MustCompile(`(?i)(secret|password|passwd|token|private|\.pem|\.key)\b`)
	for _, s := range stages {
		for _, l := range s.lines {
			if f := strings.Fields(l); (strings.EqualFold(f[0], "ENV") || strings.EqualFold(f[0], "ARG") || strings.EqualFold(f[0], "COPY")) && secretish.MatchString(l) {
				t.Errorf("stage %s: %q looks like a secret baked into the image", s.name, l)
			}
		}
	}
}
