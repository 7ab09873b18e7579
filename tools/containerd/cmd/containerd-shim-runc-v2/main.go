// Command containerd-shim-runc-v2 is the upstream runc shim (runtime type
// io.containerd.runc.v2), built from the module version pinned in
// ../../go.mod. The body mirrors upstream's cmd/containerd-shim-runc-v2.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task/plugin" // the task service
	"github.com/containerd/containerd/v2/pkg/shim"
)

func main() {
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.runc.v2"))
}
