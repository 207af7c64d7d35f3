//go:build tools

// The pin of the Helm CLI the chart tests and `make release` use, built from
// the Go module proxy by e2e/scripts/build-helm.sh.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
