package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// idle opens -conns connections to an echo sink (or a proxy in front of
// one), one round trip of 1 byte each, prints "READY n", and holds them
// idle: for the memory an idle connection costs a proxy, and for an
// upgrade under idle connections. Each line on stdin ("check") does one
// more round trip on every connection and prints "CHECK ok=N failed=M";
// EOF on stdin, or -hold, ends it.
func idleMain(args []string) error {
	fs := flag.NewFlagSet("idle", flag.ContinueOnError)
	addr := fs.String("addr", "", "loopback `address` of an echo sink (or a proxy in front of one)")
	n := fs.Int("conns", 1000, "connections to hold (1-50000)")
	hold := fs.Duration("hold", 10*time.Minute, "exit after this long at most")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for each dial and each round trip")
	var tf tlsFlags
	tf.register(fs)
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	switch {
	case fs.NArg() > 0:
		return usageError(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	case *addr == "":
		return usageError("-addr is required")
	case *n < 1 || *n > 50000:
		return usageError("-conns must be 1-50000")
	case *hold <= 0 || *timeout <= 0:
		return usageError("-hold and -timeout must be positive")
	}
	if err := checkLoopback(*addr); err != nil {
		return err
	}
	tcfg, err := tf.config()
	if err != nil {
		return err
	}
	d := net.Dialer{Timeout: *timeout}
	conns := make([]net.Conn, 0, *n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	roundTrip := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(*timeout))
		defer c.SetDeadline(time.Time{})
		if _, err := c.Write([]byte{'x'}); err != nil {
			return err
		}
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return err
		}
		if b[0] != 'x' {
			return errors.New("the echo differs")
		}
		return nil
	}
	for i := 0; i < *n; i++ {
		c, err := dialWith(&d, *addr, tcfg)
		if err != nil {
			return fmt.Errorf("dial %d of %d: %w", i+1, *n, err)
		}
		conns = append(conns, c)
		if err := roundTrip(c); err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
	}
	fmt.Printf("READY %d\n", len(conns))
	lines := make(chan bool)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- true
		}
		close(lines)
	}()
	end := time.After(*hold)
	for {
		select {
		case <-end:
			return nil
		case _, more := <-lines:
			if !more {
				return nil
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			ok, failed := 0, 0
			sem := make(chan struct{}, 64)
			for _, c := range conns {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer func() { <-sem; wg.Done() }()
					err := roundTrip(c)
					mu.Lock()
					if err == nil {
						ok++
					} else {
						failed++
					}
					mu.Unlock()
				}()
			}
			wg.Wait()
			fmt.Printf("CHECK ok=%d failed=%d\n", ok, failed)
		}
	}
}
