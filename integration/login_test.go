package integration

import (
	"context"
	"github.com/tailgate-dev/tailgate/gateway/gatewaytest"
	"log/slog"
	"strings"
	"testing"
	"time"

	"tailscale.com/tstest/integration/testcontrol"

	"github.com/tailgate-dev/tailgate/tsnode"
)

// Without an auth key and without state, the node logs the login URL once,
// on one line, and comes up when someone follows it.
func TestInteractiveLoginURLLoggedOnce(t *testing.T) {
	tn := gatewaytest.NewTailnet(t, func(c *testcontrol.Server) { c.RequireAuth = true })
	var logs gatewaytest.Logs
	node, err := tsnode.New(tsnode.Config{
		ControlURL: tn.ControlURL, Ephemeral: true, MemoryState: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	started := make(chan error, 1)
	go func() { started <- node.Start(context.Background()) }()

	var url string
	deadline := time.Now().Add(20 * time.Second)
	for url == "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		for _, r := range logs.Records(t) {
			if r["msg"] == "tailnet login required: open this URL to add the node, or set an auth key" {
				url, _ = r["url"].(string)
			}
		}
	}
	if url == "" {
		t.Fatal("no login URL logged")
	}
	// Let tsnet's own 5-second reminder loop run once: it must stay quiet.
	time.Sleep(6 * time.Second)
	if !tn.Control.CompleteAuth(url) {
		t.Fatalf("control does not know URL %s", url)
	}
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	var n int
	for _, r := range logs.Records(t) {
		if strings.Contains(r["msg"].(string), "login") || strings.Contains(r["msg"].(string), "To start") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("login URL logged %d times, want once", n)
	}
}
