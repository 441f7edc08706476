//go:build upstreamrepro

// Package upstreamrepro holds minimal reproducers of tailscale.com
// problems tailgate works around, for reporting upstream. They run only
// with -tags upstreamrepro (see README.md).
package upstreamrepro

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tailgate-dev/tailgate/tsnode/devnet"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/tsnet"
	"tailscale.com/types/logger"
)

// conns is how many TCP connections are open between the two nodes when
// one of them closes.
const conns = 600

// tsnet.Server.Close hangs when more than about 512 TCP connections are
// open (established, idle; no data needed): netstack.(*Impl).Close cancels the context of the
// goroutine that drains the link endpoint's outbound queue (inject), then
// gVisor's Stack.Close aborts each endpoint, and the RST each abort writes
// blocks in netstack.(*queue).Write once the queue (512 packets) is full.
func TestCloseWithManyOpenConnections(t *testing.T) {
	tn, err := devnet.New(devnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := func(name string) *tsnet.Server {
		s := &tsnet.Server{Dir: t.TempDir(), Hostname: name, ControlURL: tn.ControlURL, Store: new(mem.Store),
			Ephemeral: true, Logf: logger.Discard, UserLogf: logger.Discard}
		if _, err := s.Up(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	server, client := node("server"), node("client")
	ln, err := server.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	var accepted []net.Conn // held open, idle
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted = append(accepted, c)
		}
	}()
	ip4, _ := server.TailscaleIPs()
	var open []net.Conn
	for range conns {
		c, err := client.Dial(ctx, "tcp", fmt.Sprintf("%s:80", ip4))
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	// The server goes first, as the gateway's node does in tailgate dev;
	// then the client, whose connections still have data for it.
	closeWithin(t, "server", server, len(open))
	closeWithin(t, "client", client, len(open))
	var wg sync.WaitGroup
	for _, c := range open {
		wg.Go(func() { c.Close() })
	}
}

// closeWithin closes s, and fails if that takes more than 20 s, printing
// the goroutines that are stuck.
func closeWithin(t *testing.T, name string, s *tsnet.Server, open int) {
	done := make(chan struct{})
	begin := time.Now()
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		t.Logf("%s: Close returned in %v with %d connections open", name, time.Since(begin), open)
	case <-time.After(20 * time.Second):
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var stuck []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "tsnet.(*Server).Close") || strings.Contains(g, "(*queue).Write") {
				stuck = append(stuck, g)
			}
		}
		fmt.Fprintln(os.Stderr, strings.Join(stuck, "\n\n"))
		t.Errorf("%s: Close still running after 20s with %d connections open", name, open)
	}
}
