package bench

import (
	"bufio"
	"context"
	"fmt"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"net"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"tailscale.com/net/netns"

	"github.com/tailgate-dev/tailgate/gateway"
	"github.com/tailgate-dev/tailgate/policy"
	"github.com/tailgate-dev/tailgate/tsnode"
)

// Environment of a gateway helper process (see TestGatewayHelper).
const (
	helperEnv        = "TAILGATE_BENCH_HELPER"
	helperConfigEnv  = "TAILGATE_BENCH_CONFIG"
	helperControlEnv = "TAILGATE_BENCH_CONTROL"
	benchPort        = 3000
)

// TestGatewayHelper is not a test: TestBench runs the test binary again
// with TAILGATE_BENCH_HELPER=1 to serve tailgate in a process of its own,
// so that the gateway's CPU time and memory are measured as the peers'
// are, without the bench client in them. With TAILGATE_BENCH_CONTROL set it
// joins that tailnet as the integration harness's gateway node does
// (Tailnet.Gateway); without, it serves the same config with gateway.New
// and Server.Serve on 127.0.0.1. It prints its MCP URL, then takes
// commands on stdin (cpuprofile FILE, stopprofile) until stdin closes.
func TestGatewayHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the bench's gateway process, started by TestBench")
	}
	env, err := policy.NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.Parse("bench.yaml", []byte(os.Getenv(helperConfigEnv)), env)
	if err != nil {
		t.Fatal(err)
	}
	var url string
	if control := os.Getenv(helperControlEnv); control != "" {
		netns.SetEnabled(false) // as NewTailnet does: no SO_MARK without privileges
		gw := (&gatewaytest.Tailnet{ControlURL: control}).Gateway(t, cfg)
		url = gw.URL(benchPort, "/mcp")
	} else {
		// The same options as the harness's gateway, without the node.
		log := gatewaytest.Logger(t)
		srv, err := gateway.New(cfg, gateway.Options{Logger: log, DropEnv: tsnode.SecretEnv(), StopGrace: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Serve(benchPort, ln); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		url = "http://" + ln.Addr().String() + "/mcp"
	}
	fmt.Println(readyMarker, url)

	var profile *os.File
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "cpuprofile":
			if profile, err = os.Create(arg); err != nil {
				t.Fatal(err)
			}
			if err := pprof.StartCPUProfile(profile); err != nil {
				t.Fatal(err)
			}
		case "stopprofile":
			pprof.StopCPUProfile()
			if err := profile.Close(); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unknown command %q", cmd)
		}
		fmt.Println(ackMarker, cmd)
	}
}
