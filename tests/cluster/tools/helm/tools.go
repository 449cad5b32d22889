//go:build tools

// Package tools pins the helm command built by control-plane.sh.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
