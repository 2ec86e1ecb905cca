package netpoll

import (
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// syscallRawConn is the raw socket of a listener or connection.
type syscallRawConn = syscall.RawConn

func netipAddrPort4(a *unix.SockaddrInet4) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
}

func netipAddrPort6(a *unix.SockaddrInet6) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
}

// remoteOf returns the peer address of nc, or the zero AddrPort.
func remoteOf(nc net.Conn) netip.AddrPort {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
