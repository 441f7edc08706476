package integration
import (
	_ "tailscale.com/tsnet"
	_ "tailscale.com/ipn/store/mem"
	_ "tailscale.com/tstest/integration"
	_ "tailscale.com/tstest/integration/testcontrol"
	_ "tailscale.com/client/local"
	_ "github.com/google/cel-go/cel"
	_ "github.com/google/cel-go/ext"
	_ "github.com/modelcontextprotocol/go-sdk/mcp"
	_ "gopkg.in/yaml.v3"
)

