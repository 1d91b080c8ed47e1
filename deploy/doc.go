// Package deploy holds HubuIM's deployment files: the multi-target
// Dockerfile (docker/), the Kubernetes manifests as kustomize base,
// overlays (dev, prod) and components (base/, overlays/, components/), and
// the Grafana dashboard (grafana/). See docs/deploy.md.
//
// It is a Go module of its own so that the Kubernetes and kustomize
// modules its tests need stay out of the services' dependency graph. Its
// tests render every overlay in-process with kustomize (no network, no
// kubectl), decode each object into the typed Kubernetes API structs with
// unknown fields rejected, cross-check references (ConfigMaps, Secrets,
// ports, selectors, HPA and PDB targets, grace periods) and load the
// configuration files with the services' strict config loaders:
//
//	cd deploy && go test ./...
package deploy
