package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// policy says what a rendered overlay is allowed to leave outside itself.
type policy struct {
	// externalSecrets are Secrets the overlay expects to exist in the
	// cluster already (documented in docs/deploy.md). Every other
	// referenced Secret must be rendered.
	externalSecrets map[string]bool
	// pinnedImages requires every image to carry an explicit tag other
	// than "latest" (or a digest).
	pinnedImages bool
}

// check runs every cross-object check and returns all the problems found.
func check(o *objects, p policy) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if o.count == 0 {
		add("no objects rendered")
	}
	for _, d := range o.Deployments {
		checkDeployment(o, p, d, add)
	}
	for _, s := range o.Services {
		checkService(o, s, add)
	}
	for _, np := range o.NetPolicies {
		checkNetworkPolicy(o, np, add)
	}
	for _, pdb := range o.PDBs {
		if pdb.Spec.Selector == nil {
			add("PodDisruptionBudget %s: no selector", pdb.Name)
			continue
		}
		if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
			add("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", pdb.Name)
		}
		if len(o.selected(pdb.Spec.Selector, add, "PodDisruptionBudget "+pdb.Name)) == 0 {
			add("PodDisruptionBudget %s: selector %v matches no Deployment's pods", pdb.Name, metav1.FormatLabelSelector(pdb.Spec.Selector))
		}
	}
	for _, h := range o.HPAs {
		ref := h.Spec.ScaleTargetRef
		d := o.deploymentBy[ref.Name]
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || d == nil {
			add("HorizontalPodAutoscaler %s: target %s %s/%s is not a rendered Deployment", h.Name, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		if d.Spec.Replicas != nil {
			add("HorizontalPodAutoscaler %s: Deployment %s sets replicas, which resets the HPA's count on every apply", h.Name, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			add("HorizontalPodAutoscaler %s: minReplicas %v must be in [1, maxReplicas %d]", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		if len(h.Spec.Metrics) == 0 {
			add("HorizontalPodAutoscaler %s: no metrics", h.Name)
		}
		for _, m := range h.Spec.Metrics {
			if m.Resource == nil {
				continue
			}
			// Utilization is relative to the request: without one the HPA
			// never scales.
			for _, c := range d.Spec.Template.Spec.Containers {
				if _, ok := c.Resources.Requests[m.Resource.Name]; !ok {
					add("HorizontalPodAutoscaler %s: scales on %s but container %s of Deployment %s requests none", h.Name, m.Resource.Name, c.Name, d.Name)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// selected returns the Deployments whose pod template labels sel matches.
func (o *objects) selected(sel *metav1.LabelSelector, add func(string, ...any), what string) []*appsv1.Deployment {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		add("%s: selector: %v", what, err)
		return nil
	}
	if s.Empty() {
		add("%s: empty selector selects every pod", what)
		return nil
	}
	var out []*appsv1.Deployment
	for _, d := range o.Deployments {
		if s.Matches(labels.Set(d.Spec.Template.Labels)) {
			out = append(out, d)
		}
	}
	return out
}

func checkDeployment(o *objects, p policy, d *appsv1.Deployment, add func(string, ...any)) {
	what := "Deployment " + d.Name
	spec := d.Spec.Template.Spec
	if d.Spec.Selector == nil {
		add("%s: no selector", what)
	} else if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || s.Empty() || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
		add("%s: selector %v does not match its pod template labels %v", what, metav1.FormatLabelSelector(d.Spec.Selector), d.Spec.Template.Labels)
	}
	if d.Namespace == "" {
		add("%s: no namespace (the overlay must set one)", what)
	}
	if len(spec.Containers) == 0 {
		add("%s: no containers", what)
	}

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			add("%s: volume %q declared twice", what, v.Name)
		}
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			cm := o.configMap(v.ConfigMap.Name)
			if cm == nil {
				if v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional {
					add("%s: volume %q: ConfigMap %q is not rendered", what, v.Name, v.ConfigMap.Name)
				}
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := cm.Data[it.Key]; !ok {
					add("%s: volume %q: ConfigMap %q has no key %q", what, v.Name, cm.Name, it.Key)
				}
			}
		case v.Secret != nil:
			checkSecretRef(o, p, what+": volume "+v.Name, v.Secret.SecretName, "", v.Secret.Optional, add)
		}
	}

	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		cwhat := what + " container " + c.Name
		checkImage(p, cwhat, c.Image, add)
		checkResources(cwhat, c.Resources, add)
		for i, m := range c.VolumeMounts {
			if _, ok := volumes[m.Name]; !ok {
				add("%s: volumeMount %q names no volume", cwhat, m.Name)
			}
			// A mount inside another one needs its mount point created in
			// the outer volume, which fails for read-only ConfigMap and
			// Secret volumes: keep mounts side by side.
			for _, o := range c.VolumeMounts[i+1:] {
				a, b := strings.TrimSuffix(m.MountPath, "/")+"/", strings.TrimSuffix(o.MountPath, "/")+"/"
				if strings.HasPrefix(a, b) || strings.HasPrefix(b, a) {
					add("%s: volumeMounts %s and %s are nested", cwhat, m.MountPath, o.MountPath)
				}
			}
		}
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil:
				if o.configMap(ef.ConfigMapRef.Name) == nil && (ef.ConfigMapRef.Optional == nil || !*ef.ConfigMapRef.Optional) {
					add("%s: envFrom ConfigMap %q is not rendered", cwhat, ef.ConfigMapRef.Name)
				}
			case ef.SecretRef != nil:
				checkSecretRef(o, p, cwhat+": envFrom", ef.SecretRef.Name, "", ef.SecretRef.Optional, add)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				cm := o.configMap(r.Name)
				switch {
				case cm == nil && (r.Optional == nil || !*r.Optional):
					add("%s: env %s: ConfigMap %q is not rendered", cwhat, e.Name, r.Name)
				case cm != nil:
					if _, ok := cm.Data[r.Key]; !ok {
						add("%s: env %s: ConfigMap %q has no key %q", cwhat, e.Name, r.Name, r.Key)
					}
				}
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				checkSecretRef(o, p, cwhat+": env "+e.Name, r.Name, r.Key, r.Optional, add)
			}
		}
		ports := map[string]bool{}
		for _, port := range c.Ports {
			if port.Name != "" {
				if ports[port.Name] {
					add("%s: port name %q declared twice", cwhat, port.Name)
				}
				ports[port.Name] = true
			}
		}
		for name, pr := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
			if pr == nil {
				if name != "startupProbe" {
					add("%s: no %s", cwhat, name)
				}
				continue
			}
			var port *intstr.IntOrString
			switch {
			case pr.HTTPGet != nil:
				port = &pr.HTTPGet.Port
			case pr.TCPSocket != nil:
				port = &pr.TCPSocket.Port
			case pr.GRPC != nil:
				port = &intstr.IntOrString{IntVal: pr.GRPC.Port}
			}
			if port != nil && !containerHasPort(c, *port) {
				add("%s: %s port %s is not a declared container port", cwhat, name, port.String())
			}
		}
	}

	// Prometheus annotations must name a declared port.
	if a := d.Spec.Template.Annotations; a["prometheus.io/scrape"] == "true" {
		port, err := strconv.Atoi(a["prometheus.io/port"])
		found := false
		for _, c := range spec.Containers {
			found = found || (err == nil && containerHasPort(c, intstr.FromInt32(int32(port))))
		}
		if !found {
			add("%s: prometheus.io/port %q is not a declared container port", what, a["prometheus.io/port"])
		}
	}
}

func checkSecretRef(o *objects, p policy, what, name, key string, optional *bool, add func(string, ...any)) {
	s := o.secret(name)
	if s == nil {
		if !p.externalSecrets[name] && (optional == nil || !*optional) {
			add("%s: Secret %q is neither rendered nor an allowed external Secret", what, name)
		}
		return
	}
	if key == "" {
		return
	}
	if _, ok := s.Data[key]; ok {
		return
	}
	if _, ok := s.StringData[key]; !ok {
		add("%s: Secret %q has no key %q", what, name, key)
	}
}

func checkImage(p policy, what, image string, add func(string, ...any)) {
	if image == "" {
		add("%s: no image", what)
		return
	}
	if !p.pinnedImages || strings.Contains(image, "@sha256:") {
		return
	}
	last := image[strings.LastIndex(image, "/")+1:]
	i := strings.LastIndex(last, ":")
	if i < 0 || last[i+1:] == "latest" {
		add("%s: image %q is not pinned to a version tag or digest", what, image)
	}
}

func checkResources(what string, r corev1.ResourceRequirements, add func(string, ...any)) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := r.Requests[name]
		lim, okLim := r.Limits[name]
		if !okReq {
			add("%s: no %s request", what, name)
		}
		if !okLim {
			add("%s: no %s limit", what, name)
		}
		if okReq && okLim && req.Cmp(lim) > 0 {
			add("%s: %s request %s is above its limit %s", what, name, req.String(), lim.String())
		}
	}
}

func containerHasPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if port.Type == intstr.String && p.Name == port.StrVal {
			return true
		}
		if port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return true
		}
	}
	return false
}

func checkService(o *objects, s *corev1.Service, add func(string, ...any)) {
	what := "Service " + s.Name
	if len(s.Spec.Selector) == 0 {
		add("%s: no selector", what)
		return
	}
	deps := o.selected(&metav1.LabelSelector{MatchLabels: s.Spec.Selector}, add, what)
	if len(deps) == 0 {
		add("%s: selector %v matches no Deployment's pods", what, s.Spec.Selector)
	}
	names := map[string]bool{}
	for _, sp := range s.Spec.Ports {
		if len(s.Spec.Ports) > 1 && sp.Name == "" {
			add("%s: port %d needs a name (the Service has several)", what, sp.Port)
		}
		if names[sp.Name] {
			add("%s: port name %q used twice", what, sp.Name)
		}
		names[sp.Name] = true
		target := sp.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(sp.Port) // the API server's default
		}
		if sp.NodePort != 0 && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			add("%s: port %s has a nodePort on a %s Service", what, sp.Name, s.Spec.Type)
		}
		for _, d := range deps {
			found := false
			for _, c := range d.Spec.Template.Spec.Containers {
				found = found || containerHasPort(c, target)
			}
			if !found {
				add("%s: port %s targets %s, which Deployment %s's containers do not declare", what, sp.Name, target.String(), d.Name)
			}
		}
	}
	if s.Spec.ExternalTrafficPolicy != "" && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		add("%s: externalTrafficPolicy on a %s Service", what, s.Spec.Type)
	}
}

// checkNetworkPolicy: the policy selects rendered pods, names only ports
// those pods declare, and its pod peers select rendered pods; and no
// Service port leads to a port the policies of its pods do not admit (a
// Service that silently times out).
func checkNetworkPolicy(o *objects, np *networkingv1.NetworkPolicy, add func(string, ...any)) {
	what := "NetworkPolicy " + np.Name
	deps := o.selected(&np.Spec.PodSelector, add, what)
	if len(deps) == 0 {
		add("%s: podSelector %v matches no Deployment's pods", what, metav1.FormatLabelSelector(&np.Spec.PodSelector))
	}
	for i, rule := range np.Spec.Ingress {
		for _, p := range rule.Ports {
			if p.Port == nil {
				continue
			}
			for _, d := range deps {
				found := false
				for _, c := range d.Spec.Template.Spec.Containers {
					found = found || containerHasPort(c, *p.Port)
				}
				if !found {
					add("%s: ingress rule %d admits port %s, which Deployment %s's containers do not declare", what, i, p.Port.String(), d.Name)
				}
			}
		}
		for _, peer := range rule.From {
			if peer.PodSelector == nil || peer.NamespaceSelector != nil {
				continue // other namespaces or address blocks: not checkable here
			}
			if len(o.selected(peer.PodSelector, add, what+" peer")) == 0 {
				add("%s: ingress rule %d peer %v matches no Deployment's pods", what, i, metav1.FormatLabelSelector(peer.PodSelector))
			}
		}
	}
	for _, s := range o.Services {
		sel := &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
		if len(s.Spec.Selector) == 0 {
			continue
		}
		for _, d := range o.selected(sel, func(string, ...any) {}, "") {
			if !slices.Contains(deps, d) {
				continue
			}
			for _, sp := range s.Spec.Ports {
				if !o.admitted(d, sp) {
					add("Service %s: port %s reaches Deployment %s, whose NetworkPolicies admit no traffic to it", s.Name, sp.Name, d.Name)
				}
			}
		}
	}
}

// admitted reports whether some NetworkPolicy selecting d's pods has an
// ingress rule for the port Service port sp targets.
func (o *objects) admitted(d *appsv1.Deployment, sp corev1.ServicePort) bool {
	target := sp.TargetPort
	if target.Type == intstr.Int && target.IntVal == 0 {
		target = intstr.FromInt32(sp.Port)
	}
	// The target as both a name and a number, whichever the policy uses.
	var name string
	var number int32
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			if (target.Type == intstr.String && p.Name == target.StrVal) || (target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
				name, number = p.Name, p.ContainerPort
			}
		}
	}
	for _, np := range o.NetPolicies {
		s, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err != nil || !s.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				return true
			}
			for _, p := range rule.Ports {
				if p.Port == nil ||
					(p.Port.Type == intstr.String && name != "" && p.Port.StrVal == name) ||
					(p.Port.Type == intstr.Int && number != 0 && p.Port.IntVal == number) {
					return true
				}
			}
		}
	}
	return false
}
