//go:build tools

// Package tools pins the Kubernetes commands built by control-plane.sh: the
// control plane for the cluster tests, and the node components (kubelet,
// kubeadm, kube-scheduler, kube-proxy) for the kind node image of the e2e tier.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
