// httpload drives an open-loop, steady HTTP/1.1 load for `make bench-submit`:
// request k is due at start + k/rate, whatever happened to the ones before,
// and its latency is measured from that due time, so a slow server shows as
// queueing (no coordinated omission). C keep-alive connections share the
// schedule round robin (connection i sends requests i, i+C, ...).
//
// It is written in Go, stdlib only, so that the load generator costs tens of
// microseconds per request and never competes with the server under test for
// the machine's cores the way a Python client would. Benchmark-only.
//
// Input (-requests FILE): one request per line, a JSON object
// {"body": "<text>", "headers": {"Name": "value", ...}}; every request is
// POSTed to -path. Output: one line per request, "<latency ns> <status>"
// (status 0 = transport error), then "elapsed <seconds>".
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"
)

type request struct {
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers"`
}

type sample struct {
	latency time.Duration
	status  int
}

// wire builds each request's bytes once, before the clock starts.
func wire(path, host string, r request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", path, host, len(r.Body))
	names := make([]string, 0, len(r.Headers))
	for name := range r.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&b, "%s: %s\r\n", name, r.Headers[name])
	}
	b.WriteString("\r\n")
	b.WriteString(r.Body)
	return b.Bytes()
}

func load(file, path, host string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][]byte
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		var r request
		if err := json.Unmarshal(scanner.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", file, len(out)+1, err)
		}
		out = append(out, wire(path, host, r))
	}
	return out, scanner.Err()
}

// connection sends its share of the schedule on one kept-alive connection,
// reconnecting after a transport error (that request is recorded as status 0).
func connection(addr string, reqs [][]byte, start time.Time, rate float64, first, stride int, out []sample) {
	var conn net.Conn
	var reader *bufio.Reader
	for k := first; k < len(reqs); k += stride {
		due := start.Add(time.Duration(float64(k) / rate * float64(time.Second)))
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		status := 0
		if conn == nil {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				conn, reader = c, bufio.NewReaderSize(c, 64*1024)
			}
		}
		if conn != nil {
			status = roundTrip(conn, reader, reqs[k])
			if status == 0 {
				conn.Close()
				conn = nil
			}
		}
		out[k] = sample{time.Since(due), status}
	}
	if conn != nil {
		conn.Close()
	}
}

func roundTrip(conn net.Conn, reader *bufio.Reader, req []byte) int {
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return 0
	}
	if _, err := conn.Write(req); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(reader, nil)
	if err != nil {
		return 0
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		return 0
	}
	return resp.StatusCode
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server host:port")
	path := flag.String("path", "/", "request path")
	file := flag.String("requests", "", "request file (one JSON object per line)")
	rate := flag.Float64("rate", 500, "requests per second")
	conns := flag.Int("connections", 8, "keep-alive connections")
	flag.Parse()

	reqs, err := load(*file, *path, *addr)
	if err != nil || len(reqs) == 0 || *rate <= 0 || *conns < 1 {
		fmt.Fprintln(os.Stderr, "httpload: need -requests with at least one request, -rate > 0, -connections >= 1:", err)
		os.Exit(2)
	}
	samples := make([]sample, len(reqs))
	start := time.Now().Add(200 * time.Millisecond)
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func(first int) {
			defer wg.Done()
			connection(*addr, reqs, start, *rate, first, *conns, samples)
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()

	w := bufio.NewWriter(os.Stdout)
	for _, s := range samples {
		w.WriteString(strconv.FormatInt(int64(s.latency), 10))
		w.WriteByte(' ')
		w.WriteString(strconv.Itoa(s.status))
		w.WriteByte('\n')
	}
	fmt.Fprintf(w, "elapsed %.6f\n", elapsed)
	w.Flush()
}
