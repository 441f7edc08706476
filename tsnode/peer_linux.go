package tsnode

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Who is at the other end of a loopback TCP connection, from the kernel's
// socket tables: /proc/net/tcp and tcp6 list every socket of the network
// namespace with its addresses, owner uid and inode, and /proc/self/fd
// links to the inodes of this process's sockets.

// loopbackPeer finds the socket at the other end of c, a connection
// accepted on loopback: its owner's uid and its inode.
func loopbackPeer(c net.Conn) (uid uint32, inode uint64, err error) {
	peer, err1 := netip.ParseAddrPort(c.RemoteAddr().String())
	self, err2 := netip.ParseAddrPort(c.LocalAddr().String())
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("not a TCP connection: %v", c.RemoteAddr())
	}
	// The peer's socket has the peer's address as its local address and
	// ours as its remote one.
	var wants [][2]string
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		wants = wants[:0]
		if file == "/proc/net/tcp" {
			if !peer.Addr().Unmap().Is4() {
				continue
			}
			wants = append(wants, [2]string{procAddr4(peer), procAddr4(self)})
		} else {
			wants = append(wants, [2]string{procAddr6(peer), procAddr6(self)})
		}
		uid, inode, found, err := findSocket(file, wants)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, 0, err
		}
		if found {
			return uid, inode, nil
		}
	}
	return 0, 0, fmt.Errorf("no socket %v→%v in /proc/net/tcp", peer, self)
}

func findSocket(file string, wants [][2]string) (uid uint32, inode uint64, found bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		for _, w := range wants {
			if fields[1] != w[0] || fields[2] != w[1] {
				continue
			}
			u, err1 := strconv.ParseUint(fields[7], 10, 32)
			ino, err2 := strconv.ParseUint(fields[9], 10, 64)
			if err1 != nil || err2 != nil {
				return 0, 0, false, fmt.Errorf("%s: unparsable line %q", file, sc.Text())
			}
			return uint32(u), ino, true, nil
		}
	}
	return 0, 0, false, sc.Err()
}

// procAddr4 is ap as /proc/net/tcp prints it: the address as a
// host-order 32-bit word of its network-order bytes, then the port, in hex.
func procAddr4(ap netip.AddrPort) string {
	b := ap.Addr().Unmap().As4()
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(b[:]), ap.Port())
}

// procAddr6 is ap as /proc/net/tcp6 prints it (IPv4 as ::ffff:a.b.c.d).
func procAddr6(ap netip.AddrPort) string {
	b := ap.Addr().As16()
	var s strings.Builder
	for i := 0; i < 16; i += 4 {
		fmt.Fprintf(&s, "%08X", binary.NativeEndian.Uint32(b[i:i+4]))
	}
	fmt.Fprintf(&s, ":%04X", ap.Port())
	return s.String()
}

// ownedBySelf refuses a connection whose other end is not a socket of this
// process: tsnet forwards a Service's connections from inside tailgate.
func ownedBySelf(c net.Conn) error {
	_, inode, err := loopbackPeer(c)
	if err != nil {
		return err
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		if link, err := os.Readlink("/proc/self/fd/" + name); err == nil && link == want {
			return nil
		}
	}
	return errors.New("the connecting socket belongs to another process")
}

// ownedByUID refuses a connection whose other end is not a socket of uid:
// the host's tailscaled, which tailgate cannot otherwise tell apart.
func ownedByUID(uid uint32) func(net.Conn) error {
	return func(c net.Conn) error {
		got, _, err := loopbackPeer(c)
		if err != nil {
			return err
		}
		if got != uid {
			return fmt.Errorf("the connecting socket belongs to uid %d, not to tailscaled's uid %d", got, uid)
		}
		return nil
	}
}

// socketPeerUID is the uid of the process serving the unix socket at path
// (SO_PEERCRED): the host's tailscaled behind its LocalAPI socket.
func socketPeerUID(path string) (uint32, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}
