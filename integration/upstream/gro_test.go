package upstream

import (
	"net/netip"
	"os"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"tailscale.com/net/packet"
	"tailscale.com/wgengine/netstack/gro"
)

// counter is a netstack that counts what GRO delivers to it.
type counter struct {
	name string
	got  []string
}

func (c *counter) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	b := pkt.ToView().AsSlice()
	ip := header.IPv4(b)
	tcp := header.TCP(b[ip.HeaderLength():])
	c.got = append(c.got, netip.AddrPortFrom(netip.AddrFrom4(ip.DestinationAddress().As4()), tcp.DestinationPort()).String())
}

func (c *counter) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// tcpSegment is an IPv4 TCP data segment with valid checksums.
func tcpSegment(src, dst netip.AddrPort, seq uint32, payload []byte) []byte {
	b := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(b[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: 1,
		DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 65535,
	})
	copy(tcp.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	xsum = checksum.Checksum(payload, xsum)
	tcp.SetChecksum(^tcp.CalculateChecksum(xsum))
	return b
}

// TestGROFlushLeavesPackets is the cause of TestBigBodies' losses, without
// a tailnet: two segments of two flows that hash to one GRO bucket are
// enqueued on node A's GRO and flushed; gVisor's GRO.Flush delivers only
// the first packet of each bucket (it reads the next list entry after
// removing the current one, whose links the removal clears), and
// tailscale.com's netstack/gro returns the GRO, with the second packet
// still in it, to a pool shared by every netstack of the process. The next
// node to take a GRO from the pool (B) gets A's packet delivered to its
// own stack.
func TestGROFlushLeavesPackets(t *testing.T) {
	if os.Getenv("TAILGATE_UPSTREAM") == "" {
		t.Skip("set TAILGATE_UPSTREAM=1 to run the upstream reproducers")
	}
	a, b := &counter{name: "A"}, &counter{name: "B"}
	// Ports 1000 and 2000, swapped between flows, land in one bucket
	// (gVisor hashes the sum of address bytes and ports).
	seg1 := tcpSegment(netip.MustParseAddrPort("100.64.0.1:1000"), netip.MustParseAddrPort("100.64.0.2:2000"), 100, []byte("first"))
	seg2 := tcpSegment(netip.MustParseAddrPort("100.64.0.1:2000"), netip.MustParseAddrPort("100.64.0.2:1000"), 100, []byte("second"))
	segB := tcpSegment(netip.MustParseAddrPort("100.64.0.2:80"), netip.MustParseAddrPort("100.64.0.3:3001"), 100, []byte("B's own"))

	g := gro.NewGRO()
	g.SetDispatcher(a)
	for _, seg := range [][]byte{seg1, seg2} {
		var p packet.Parsed
		p.Decode(seg)
		g.Enqueue(&p)
	}
	g.Flush()
	t.Logf("A's Flush delivered to A: %v", a.got)

	// B's next batch, on a GRO from the pool: one packet of its own
	// (another bucket), then Flush.
	g = gro.NewGRO()
	g.SetDispatcher(b)
	var p packet.Parsed
	p.Decode(segB)
	g.Enqueue(&p)
	g.Flush()
	t.Logf("B's Flush delivered to B: %v", b.got)
	if len(a.got) != 2 {
		t.Errorf("A's GRO delivered %d of the 2 packets enqueued to A; B's got %v", len(a.got), b.got)
	}
}
