package lifecycle

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
)

// passed returns descriptors as systemd would pass them: listening TCP
// sockets with names.
func passed(t *testing.T, names ...string) ([]*os.File, []string) {
	t.Helper()
	var files []*os.File
	var addrs []string
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			t.Fatal(err)
		}
		fd, err := syscall.Dup(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		f.Close()
		ln.Close() // fd is a duplicate: the socket stays open
		files = append(files, os.NewFile(uintptr(fd), name))
	}
	return files, addrs
}

func TestListenersFrom(t *testing.T) {
	tests := []struct {
		name    string
		names   []string
		want    map[string]int // listener name -> index of the passed socket
		wantErr string
	}{
		{name: "client and admin", names: []string{"client", "admin"}, want: map[string]int{"client": 0, "admin": 1}},
		{name: "admin first", names: []string{"admin", "client"}, want: map[string]int{"client": 1, "admin": 0}},
		{name: "lone unit-named socket is the client", names: []string{"orchestratord.socket"}, want: map[string]int{"client": 0}},
		{name: "lone unnamed socket is the client", names: []string{"LISTEN_FD_3"}, want: map[string]int{"client": 0}},
		{name: "admin and an unnamed socket", names: []string{"admin", "LISTEN_FD_4"}, want: map[string]int{"admin": 0, "client": 1}},
		{name: "two unnamed sockets are ambiguous", names: []string{"LISTEN_FD_3", "LISTEN_FD_4"}, wantErr: "FileDescriptorName"},
		{name: "client twice", names: []string{"client", "client"}, wantErr: `more than one socket named "client"`},
		{name: "client and a stray socket", names: []string{"client", "metrics"}, wantErr: "unexpected sockets metrics"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			files, addrs := passed(t, tc.names...)
			got, err := listenersFrom(files)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("listenersFrom: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d listeners, want %d", len(got), len(tc.want))
			}
			for name, i := range tc.want {
				ln := got[name]
				if ln == nil {
					t.Fatalf("no %q listener", name)
				}
				if ln.Addr().String() != addrs[i] {
					t.Errorf("%s: got %s, want %s", name, ln.Addr(), addrs[i])
				}
				// The listener works: a dial is accepted.
				c, err := net.Dial("tcp", addrs[i])
				if err != nil {
					t.Fatalf("dial %s: %v", name, err)
				}
				s, err := ln.Accept()
				if err != nil {
					t.Fatalf("accept %s: %v", name, err)
				}
				s.Close()
				c.Close()
				ln.Close()
			}
		})
	}
}

func TestActivatedWithoutSystemd(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	got, err := Activated()
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want no listeners, nil", got, err)
	}
	// Variables inherited from a parent (LISTEN_PID of another process)
	// are ignored.
	t.Setenv("LISTEN_FDS", "2")
	t.Setenv("LISTEN_PID", "1")
	got, err = Activated()
	if err != nil || len(got) != 0 {
		t.Fatalf("inherited variables: got %v, %v; want no listeners, nil", got, err)
	}
}
