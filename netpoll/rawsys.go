package netpoll

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of the message path never wait: sockets are
// non-blocking and a poller's epoll_wait has a zero timeout. They are made
// with RawSyscall, without the runtime's entersyscall/exitsyscall: the P
// is never seen in a system call, so sysmon never hands it to another
// thread (a futex wakeup and a context switch) and the thread never has to
// win a P back afterwards (another futex sleep). Measured at a fixed
// 10,000 msg/s (docs/benchmarks.md, "What changed in the engine").

// readRaw is read(2) on a non-blocking fd.
func readRaw(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// writeRaw is write(2) on a non-blocking fd; p is not empty.
func writeRaw(fd int, p []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// writevRaw is writev(2) on a non-blocking fd.
func writevRaw(fd int, iov []unix.Iovec) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// epollPoll is epoll_wait(2) with a zero timeout: it returns the ready
// events without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
