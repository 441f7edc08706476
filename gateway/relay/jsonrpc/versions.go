package jsonrpc

// MCP protocol versions tailgate tells apart.
const (
	// ModernVersion is the first MCP protocol version without sessions
	// (2026-07-28): a version string below it is of the session era.
	ModernVersion = "2026-07-28"
	// LatestVersion is the newest MCP protocol version whose session
	// handshake tailgate speaks to targets of its own accord.
	LatestVersion = "2025-11-25"
)
