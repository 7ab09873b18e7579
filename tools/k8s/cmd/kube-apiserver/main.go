// Command kube-apiserver is the upstream API server, built from the
// k8s.io/kubernetes module at the version pinned in ../../go.mod. It exists
// only so tokensvc's integration tests run against a real API server; the
// body mirrors upstream's cmd/kube-apiserver/apiserver.go.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // build version metric, as upstream
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	// cli.Run wraps cobra's Execute with upstream's log setup and flushing.
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
