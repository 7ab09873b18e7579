// mintload is the tokensvc counterpart of MUNGE's remunge: T threads ask the
// mint daemon for tokens back to back for D seconds and report tokens/second.
// It is written in Go (like remunge is in C) so the load generator, not the
// daemon under test, is never the slower side. Benchmark-only; stdlib only.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// mintOnce makes one request with plain blocking system calls, as remunge
// does in C: Go's netpoller would add a park and wake-up per read and make
// the load generator, not the daemon, the bottleneck.
func mintOnce(addr *syscall.SockaddrUnix, request, reply []byte) error {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if err := syscall.Connect(fd, addr); err != nil {
		return err
	}
	if _, err := syscall.Write(fd, request); err != nil {
		return err
	}
	got := 0
	for got < len(reply) {
		n, err := syscall.Read(fd, reply[got:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		got += n
		if bytes.IndexByte(reply[got-n:got], '\n') >= 0 {
			break
		}
	}
	if !bytes.HasPrefix(reply[:got], []byte("OK ")) {
		return fmt.Errorf("daemon refused: %q", reply[:got])
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
			runtime.LockOSThread() // one OS thread per client, like remunge's pthreads
			addr := &syscall.SockaddrUnix{Name: *socket}
			reply := make([]byte, 64*1024)
			for time.Now().Before(deadline) {
				if err := mintOnce(addr, request, reply); err != nil {
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
