package gateway

// Commit is the source revision tailgate was built from; release builds
// set it, as they set Version:
//
//	go build -ldflags "-X github.com/tailgate-dev/tailgate/gateway.Version=v1.2.3 -X github.com/tailgate-dev/tailgate/gateway.Commit=abc1234"
//
// (make build and make release do). Empty: not stamped.
var Commit = ""
