// Command containerd is the upstream daemon with its built-in plugins (CRI
// included), built from the module version pinned in ../../go.mod for
// tokensvc's end-to-end node. The body mirrors upstream's
// cmd/containerd/main.go; the build tags in mk/node.mk leave out the
// snapshotters the test node never uses.
package main

import (
	"context"
	"fmt"
	"os"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins" // plugins register themselves
	"github.com/containerd/containerd/v2/cmd/containerd/command"
)

func main() {
	if err := command.App().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd:", err)
		os.Exit(1)
	}
}
