// Package integration holds tailgate's end-to-end tests: tailgate and its
// clients as nodes of an in-process tailnet (gateway/gatewaytest), talking
// over real WireGuard, with real MCP servers and clients from Go and npm.
// Nothing leaves 127.0.0.1.
package integration
