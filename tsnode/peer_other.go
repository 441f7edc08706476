//go:build !linux

package tsnode

import (
	"errors"
	"net"
)

// Outside Linux tailgate cannot tell who is at the other end of a loopback
// connection: the PROXY socket takes any local connection (see README).

func ownedBySelf(net.Conn) error { return nil }

func ownedByUID(uint32) func(net.Conn) error { return func(net.Conn) error { return nil } }

func socketPeerUID(string) (uint32, error) {
	return 0, errors.New("the peer of a unix socket is known on Linux only")
}
