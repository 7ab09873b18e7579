// Command ctr is containerd's own client, built from the module version
// pinned in ../../go.mod. The test fixture uses it to import image archives
// into the CRI namespace; the body mirrors upstream's cmd/ctr.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/ctr/app"
)

func main() {
	if err := app.New().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "ctr:", err)
		os.Exit(1)
	}
}
