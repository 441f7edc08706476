package idtoken_test

import (
	"context"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/tailgate-dev/tailgate/gateway/idtoken"
)

// A remote MCP server on the tailnet, reached through the tailgate at
// https://gw.example.ts.net, accepts only calls that come through it and
// learns who makes each: go-sdk's bearer-token middleware checks the
// gateway's token against its published keys.
func ExampleVerifier() {
	server := mcp.NewServer(&mcp.Implementation{Name: "notes", Version: "v1.0.0"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Says who is calling"},
		func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			// The caller's login, or for a tagged node its MagicDNS name.
			caller := req.Extra.TokenInfo.UserID
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: caller}}}, nil, nil
		})

	// The issuer is the gateway's URL; the audience is what the gateway
	// is configured to send this target (here its URL), so a token meant
	// for another target is refused here.
	verify := idtoken.Verifier("", "https://gw.example.ts.net", "https://notes.example.ts.net/mcp", nil)
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	http.Handle("/mcp", auth.RequireBearerToken(verify, &auth.RequireBearerTokenOptions{ClockSkew: idtoken.Leeway})(handler))
	// http.ListenAndServe(":80", nil), or a tsnet listener.
}
