package lifecycle

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
)

// Names of the sockets systemd passes (FileDescriptorName= in the unit).
const (
	SocketClient = "client"
	SocketAdmin  = "admin"
)

// Activated returns the listeners passed by socket activation
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), by name, and unsets those
// variables. A lone socket with another name (systemd's default name is
// the unit's, "orchestratord.socket"; systemd-socket-activate without
// --fdname passes none) is taken as the client listener. It returns an
// empty map when the process was not socket-activated.
func Activated() (map[string]net.Listener, error) {
	if os.Getenv("LISTEN_FDS") == "" {
		return map[string]net.Listener{}, nil
	}
	files := activation.Files(true)
	if len(files) == 0 {
		// LISTEN_PID names another process: the variables were inherited.
		return map[string]net.Listener{}, nil
	}
	return listenersFrom(files)
}

// listenersFrom turns passed descriptors into listeners by name. It takes
// ownership of files: each is closed (its listener holds a duplicate).
func listenersFrom(files []*os.File) (map[string]net.Listener, error) {
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	out := make(map[string]net.Listener, len(files))
	var others []*os.File
	var errs []error
	for _, f := range files {
		name := f.Name()
		switch name {
		case SocketClient, SocketAdmin:
			if _, dup := out[name]; dup {
				errs = append(errs, fmt.Errorf("more than one socket named %q: one listener per name is supported", name))
				continue
			}
			ln, err := net.FileListener(f)
			if err != nil {
				errs = append(errs, fmt.Errorf("socket %q: %w", name, err))
				continue
			}
			out[name] = ln
		default:
			others = append(others, f)
		}
	}
	if len(others) > 0 {
		if _, ok := out[SocketClient]; ok || len(others) > 1 {
			names := make([]string, len(others))
			for i, f := range others {
				names[i] = f.Name()
			}
			errs = append(errs, fmt.Errorf("unexpected sockets %s: name them %q and %q with FileDescriptorName=",
				strings.Join(names, ", "), SocketClient, SocketAdmin))
		} else {
			ln, err := net.FileListener(others[0])
			if err != nil {
				errs = append(errs, fmt.Errorf("socket %q: %w", others[0].Name(), err))
			} else {
				out[SocketClient] = ln
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, ln := range out {
			ln.Close()
		}
		return nil, fmt.Errorf("socket activation: %w", err)
	}
	return out, nil
}
