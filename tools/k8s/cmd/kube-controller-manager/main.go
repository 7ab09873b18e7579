// Command kube-controller-manager is the upstream controller manager, built
// from the k8s.io/kubernetes module at the version pinned in ../../go.mod.
// The end-to-end tests need it: node lifecycle lifts the not-ready taint,
// the ServiceAccount controller creates default ServiceAccounts and the
// PersistentVolume binder binds claims. The body mirrors upstream's
// cmd/kube-controller-manager/controller-manager.go.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // build version metric, as upstream
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
