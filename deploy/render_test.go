package deploy

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// objects is a rendered kustomization decoded into typed API objects.
type objects struct {
	Namespaces   []*corev1.Namespace
	Deployments  []*appsv1.Deployment
	Services     []*corev1.Service
	ConfigMaps   []*corev1.ConfigMap
	Secrets      []*corev1.Secret
	PDBs         []*policyv1.PodDisruptionBudget
	HPAs         []*autoscalingv2.HorizontalPodAutoscaler
	NetPolicies  []*networkingv1.NetworkPolicy
	count        int
	deploymentBy map[string]*appsv1.Deployment
}

// render builds the kustomization at dir of fs in-process (no kubectl,
// no network) and decodes every object strictly.
func render(tb testing.TB, fs filesys.FileSystem, dir string) *objects {
	tb.Helper()
	objs, err := renderErr(fs, dir)
	if err != nil {
		tb.Fatalf("render %s: %v", dir, err)
	}
	return objs
}

func renderErr(fs filesys.FileSystem, dir string) (*objects, error) {
	opts := krusty.MakeDefaultOptions()
	rm, err := krusty.MakeKustomizer(opts).Run(fs, dir)
	if err != nil {
		return nil, err
	}
	objs := &objects{deploymentBy: map[string]*appsv1.Deployment{}}
	for _, r := range rm.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.GetKind(), r.GetName(), err)
		}
		if err := objs.add(r.GetApiVersion(), r.GetKind(), data); err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", r.GetKind(), r.GetNamespace(), r.GetName(), err)
		}
	}
	return objs, nil
}

// add decodes one object by its apiVersion and kind. Kinds the manifests
// are not expected to contain are errors, so nothing escapes the checks.
func (o *objects) add(apiVersion, kind string, data []byte) error {
	var dst any
	switch apiVersion + " " + kind {
	case "v1 Namespace":
		v := &corev1.Namespace{}
		o.Namespaces, dst = append(o.Namespaces, v), v
	case "apps/v1 Deployment":
		v := &appsv1.Deployment{}
		o.Deployments, dst = append(o.Deployments, v), v
	case "v1 Service":
		v := &corev1.Service{}
		o.Services, dst = append(o.Services, v), v
	case "v1 ConfigMap":
		v := &corev1.ConfigMap{}
		o.ConfigMaps, dst = append(o.ConfigMaps, v), v
	case "v1 Secret":
		v := &corev1.Secret{}
		o.Secrets, dst = append(o.Secrets, v), v
	case "policy/v1 PodDisruptionBudget":
		v := &policyv1.PodDisruptionBudget{}
		o.PDBs, dst = append(o.PDBs, v), v
	case "autoscaling/v2 HorizontalPodAutoscaler":
		v := &autoscalingv2.HorizontalPodAutoscaler{}
		o.HPAs, dst = append(o.HPAs, v), v
	case "networking.k8s.io/v1 NetworkPolicy":
		v := &networkingv1.NetworkPolicy{}
		o.NetPolicies, dst = append(o.NetPolicies, v), v
	default:
		return fmt.Errorf("unexpected apiVersion/kind %q %q (add it to objects.add and its checks)", apiVersion, kind)
	}
	if err := decodeStrict(data, dst); err != nil {
		return err
	}
	o.count++
	if d, ok := dst.(*appsv1.Deployment); ok {
		o.deploymentBy[d.Name] = d
	}
	return nil
}

// decodeStrict decodes JSON into dst the way the API server's strict field
// validation does: field names are case-sensitive, and unknown or
// duplicate fields are errors.
func decodeStrict(data []byte, dst any) error {
	strict, err := kjson.UnmarshalStrict(data, dst, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return fmt.Errorf("strict decoding: %v", strict)
	}
	return nil
}

func (o *objects) configMap(name string) *corev1.ConfigMap {
	for _, c := range o.ConfigMaps {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (o *objects) secret(name string) *corev1.Secret {
	for _, s := range o.Secrets {
		if s.Name == name {
			return s
		}
	}
	return nil
}
