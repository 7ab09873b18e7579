// Command etcd runs a single-member etcd through go.etcd.io/etcd/server/v3's
// embed package, for tokensvc's integration tests only. It takes the few
// flags the test fixture needs, blocks until the server is ready (printing
// one "ready" line on stdout) and stops cleanly on SIGINT/SIGTERM.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func parseURLs(flagName, value string) []url.URL {
	var out []url.URL
	for _, raw := range strings.Split(value, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			fail("--%s: bad URL %q", flagName, raw)
		}
		out = append(out, *u)
	}
	return out
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "etcd: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	name := flag.String("name", "default", "member name")
	dataDir := flag.String("data-dir", "", "data directory (required)")
	clientURLs := flag.String("listen-client-urls", "http://127.0.0.1:2379", "comma-separated client URLs to listen on")
	advClientURLs := flag.String("advertise-client-urls", "", "client URLs to advertise (default: the listen URLs)")
	peerURLs := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "comma-separated peer URLs to listen on")
	quota := flag.Int64("quota-backend-bytes", 0, "backend size quota in bytes (0: etcd's default)")
	noFsync := flag.Bool("unsafe-no-fsync", false, "skip fsync; for throwaway test data only")
	logLevel := flag.String("log-level", "warn", "debug|info|warn|error")
	readyTimeout := flag.Duration("ready-timeout", 60*time.Second, "give up if not ready within this time")
	flag.Parse()
	if *dataDir == "" {
		fail("--data-dir is required")
	}
	if flag.NArg() != 0 {
		fail("unexpected arguments: %v", flag.Args())
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = parseURLs("listen-client-urls", *clientURLs)
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	if *advClientURLs != "" {
		cfg.AdvertiseClientUrls = parseURLs("advertise-client-urls", *advClientURLs)
	}
	cfg.ListenPeerUrls = parseURLs("listen-peer-urls", *peerURLs)
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.QuotaBackendBytes = *quota
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail("start: %v", err)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case <-time.After(*readyTimeout):
		e.Server.Stop()
		fail("not ready after %s", *readyTimeout)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "etcd: %s, stopping\n", s)
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: server error: %v\n", err)
		e.Close()
		os.Exit(1)
	}
}
