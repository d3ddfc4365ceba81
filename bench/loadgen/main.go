// Command loadgen is the load generator and test backend of baton's
// quick benchmark (bench/quick.sh, bench/README.md).
//
//	loadgen sink       -listen 127.0.0.1:23401 [-mode discard|echo|greet|source]
//	loadgen throughput -addr 127.0.0.1:23401 -conns 1 -duration 5s -size 131072 [-dir up|down|both]
//	loadgen connrate   -addr 127.0.0.1:23403 -workers 4 -duration 5s [-hello db.example.com [-alpn h2]]
//	loadgen idle       -addr 127.0.0.1:23403 -conns 1000
//
// With -tls the clients speak TLS on every connection (a terminating
// proxy's clients; -tls-max 1.2 caps the version, -tls-resume resumes
// sessions), and the sink serves TLS (a proxy_ssl upstream).
//
// sink is a backend. Modes: discard reads and throws the data away; echo
// writes back everything it reads; greet writes one line (GreetLine) and
// closes; source writes as fast as it can and discards whatever it reads.
//
// throughput opens -conns connections and, for -duration after a -warmup,
// moves data as fast as possible: up = the client writes (sink in discard or
// source mode), down = the client reads (sink in source mode), both = the
// client writes and reads at once on each connection (sink in source mode).
// One buffer per connection and direction is reused; no allocation per write.
//
// connrate runs -workers loops of: dial, write 1 byte, read it back (sink in
// echo mode), close; and reports connections per second and the latency of
// dial+echo. With -hello NAME (and -alpn PROTOS) it writes a real TLS
// ClientHello for NAME instead of the byte, made once at start by crypto/tls,
// and reads the whole hello back: a load for proxies that route on SNI
// (ssl_preread).
//
// idle opens -conns connections, one round trip each, prints READY n and
// holds them; each line on stdin makes one more round trip on each and
// prints CHECK ok=N failed=M (for an upgrade under idle connections).
//
// throughput and connrate print exactly one result line on stdout:
//
//	RESULT throughput dir=up conns=1 ... throughput_gbps=12.345 errors=0
//	RESULT connrate workers=4 ... conns_per_sec=12345 p50_us=80 p99_us=400 errors=0
//
// Everything is bounded: every socket operation has a deadline, runs are
// bounded by time and by count, and all addresses must be loopback
// (127.0.0.0/8 or ::1, as literal IPs). Exit status: 0 on success, 1 if the
// run failed or moved nothing, 2 on bad usage.
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
)

const usage = `usage:
  loadgen sink       -listen ADDR [-mode discard|echo|greet|source]
  loadgen throughput -addr ADDR [-conns N] [-duration D] [-size BYTES] [-dir up|down|both]
  loadgen connrate   -addr ADDR [-workers N] [-duration D] [-hello SERVERNAME [-alpn h2,http/1.1]]
  loadgen idle       -addr ADDR [-conns N] [-hold D]
The client subcommands take -tls [-tls-max 1.2|1.3] [-tls-resume]; sink takes -tls [-tls-cert F -tls-key F].
Run "loadgen SUBCOMMAND -h" for the flags of one subcommand.
All addresses must be literal loopback IPs with a port (127.0.0.0/8 or [::1]).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "sink":
		err = sinkMain(args)
	case "throughput":
		err = throughputMain(args)
	case "connrate":
		err = connrateMain(args)
	case "idle":
		err = idleMain(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "loadgen %s: %v\n", os.Args[1], err)
		if _, ok := err.(usageError); ok {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks errors caused by bad flags or arguments (exit status 2).
type usageError string

func (e usageError) Error() string { return string(e) }

// checkLoopback returns an error unless addr is "IP:port" with IP a literal
// loopback address (127.0.0.0/8 or ::1). Host names are refused, so that a
// resolver can never send benchmark traffic off the machine.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError(fmt.Sprintf("bad address %q: %v", addr, err))
	}
	if port == "" {
		return usageError(fmt.Sprintf("bad address %q: missing port", addr))
	}
	// Zones ("::1%lo") are not needed for loopback; refuse them.
	if strings.Contains(host, "%") {
		return usageError(fmt.Sprintf("refusing address %q: zones not allowed", addr))
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return usageError(fmt.Sprintf("refusing non-loopback address %q (want a literal 127.x.y.z or ::1)", addr))
	}
	return nil
}
