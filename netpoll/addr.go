package netpoll

import (
	"encoding/binary"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// syscallRawConn is the raw socket of a listener or connection.
type syscallRawConn = syscall.RawConn

// accept4 accepts one connection from the non-blocking listening socket
// fd, non-blocking and close-on-exec, and returns its peer address (the
// zero AddrPort for a non-IP socket) and whether it is TCP over IP. It
// parses the address itself: x/sys/unix's Accept4 asks the listener for
// its protocol (a getsockopt per accepted connection) to tell L2TP apart.
func accept4(fd int) (nfd int, peer netip.AddrPort, ip bool, err error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unsafe.Sizeof(rsa))
	r, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, false, e
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
		return int(r), netip.AddrPortFrom(netip.AddrFrom4(a.Addr), port), true, nil
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&a.Port))[:])
		return int(r), netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), port), true, nil
	}
	return int(r), netip.AddrPort{}, false, nil
}

// remoteOf returns the peer address of nc, or the zero AddrPort.
func remoteOf(nc net.Conn) netip.AddrPort {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort()
	}
	return netip.AddrPort{}
}
