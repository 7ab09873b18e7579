// mintload is the tokensvc counterpart of MUNGE's remunge: T threads ask the
// mint daemon for tokens back to back for D seconds and report tokens/second.
// It is written in Go (like remunge is in C) so the load generator, not the
// daemon under test, is never the slower side. Benchmark-only; stdlib only.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func mintOnce(socket string, request []byte) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.Write(request); err != nil {
		return err
	}
	reply, err := bufio.NewReaderSize(conn, 4096).ReadBytes('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(reply, []byte("OK ")) {
		return fmt.Errorf("daemon refused: %q", reply)
	}
	return nil
}

func main() {
	socket := flag.String("socket", "/run/tokensvc/mint.sock", "mint daemon socket")
	threads := flag.Int("threads", 1, "concurrent clients")
	duration := flag.Duration("duration", 5*time.Second, "how long to run")
	flag.Parse()

	request := []byte("MINT1\n")
	var done, failed atomic.Int64
	deadline := time.Now().Add(*duration)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *threads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := mintOnce(*socket, request); err != nil {
					if failed.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "mintload:", err)
					}
					continue
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	fmt.Printf("%d %d %.3f %.1f\n", done.Load(), failed.Load(), elapsed, float64(done.Load())/elapsed)
	if failed.Load() > 0 {
		os.Exit(1)
	}
}
