package load

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"
)

// Modes of a run.
const (
	ModeHold  = "hold"  // N idle connections for Duration
	ModeEcho  = "echo"  // closed loop: Workers requests in flight, a new one on each answer
	ModeRate  = "rate"  // open loop at Rate requests per second
	ModeSlow  = "slow"  // echo, then echo again with SlowPeers dribbling half frames
	ModeChurn = "churn" // connect, (welcome,) disconnect, as fast as ChurnWorkers can
)

// Options configure a run. The zero value of a field means its default.
type Options struct {
	Mode         string        `json:"mode"`
	URL          string        `json:"url"`                  // ws://127.0.0.1:8080/ws
	Raw          bool          `json:"raw"`                  // bare echo server: no welcome, no envelope
	Route        string        `json:"route"`                // protocol route; default "echo"
	Token        string        `json:"-"`                    // JWT sent as Authorization: Bearer
	Conns        int           `json:"conns"`                // connections (not counting slow peers)
	Workers      int           `json:"workers"`              // echo: requests in flight in total; default 200
	Payload      int           `json:"payload"`              // bytes per request frame; default 1024
	Duration     time.Duration `json:"duration"`             // measured phase; default 10s
	Rate         float64       `json:"rate"`                 // rate: requests per second in total
	SlowPeers    int           `json:"slow_peers"`           // slow: half-frame peers; default 2000
	Sources      []netip.Addr  `json:"sources"`              // source addresses, rotated
	Dialers      int           `json:"dialers"`              // handshake goroutines; default 32
	ConnectRate  float64       `json:"connect_rate"`         // handshakes started per second in total; 0: as fast as Dialers allow
	Loops        int           `json:"loops"`                // epoll loops; default GOMAXPROCS
	DialTimeout  time.Duration `json:"dial_timeout"`         // per handshake; default 10s
	ChurnWorkers int           `json:"churn_workers"`        // churn: concurrent dialers; default 16
	Settle       time.Duration `json:"settle"`               // wait after connecting, before sampling; default 1s
	ServerPIDs   []int         `json:"server_pids"`          // sampled from /proc (summed)
	GCURLs       []string      `json:"gc_urls,omitempty"`    // fetched before each sample to force a GC
	MetricsURLs  []string      `json:"metrics_urls"`         // Prometheus text with go_* gauges (summed)
	Procs        int           `json:"procs"`                // client processes; default 1
	Shard        int           `json:"shard"`                // this process's index when Procs > 1
	Label        string        `json:"label,omitempty"`      // free text carried into the result
	Executable   string        `json:"executable,omitempty"` // binary re-executed for shards; default os.Executable
}

// WithDefaults fills unset fields and checks the rest.
func (o Options) WithDefaults() (Options, error) {
	if o.Route == "" {
		o.Route = "echo"
	}
	if o.Workers == 0 {
		o.Workers = 200
	}
	if o.Payload == 0 {
		o.Payload = 1024
	}
	if o.Duration == 0 {
		o.Duration = 10 * time.Second
	}
	if o.SlowPeers == 0 && o.Mode == ModeSlow {
		o.SlowPeers = 2000
	}
	if o.Dialers == 0 {
		o.Dialers = 32
	}
	if o.Loops == 0 {
		o.Loops = runtime.GOMAXPROCS(0)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.ChurnWorkers == 0 {
		o.ChurnWorkers = 16
	}
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.Procs == 0 {
		o.Procs = 1
	}
	if o.Executable == "" {
		exe, err := os.Executable()
		if err == nil {
			o.Executable = exe
		}
	}
	var errs []error
	switch o.Mode {
	case ModeHold, ModeEcho, ModeRate, ModeSlow, ModeChurn:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want hold, echo, rate, slow or churn", o.Mode))
	}
	if !strings.HasPrefix(o.URL, "ws://") {
		errs = append(errs, fmt.Errorf("url %q: want ws://host:port/path", o.URL))
	}
	if o.Raw && o.Payload < 20 {
		errs = append(errs, errors.New("payload: raw mode needs at least 20 bytes (the request number)"))
	}
	if o.Mode == ModeRate && o.Rate <= 0 {
		errs = append(errs, errors.New("rate: must be > 0 in rate mode"))
	}
	if o.Mode != ModeChurn && o.Conns <= 0 {
		errs = append(errs, errors.New("conns: must be > 0"))
	}
	if o.ConnectRate < 0 {
		errs = append(errs, fmt.Errorf("connect-rate %g: must be >= 0 (0: unpaced)", o.ConnectRate))
	}
	if o.ConnectRate > 0 && o.Mode == ModeChurn {
		errs = append(errs, errors.New("connect-rate: churn measures the unpaced connect rate; pace hold, echo, rate or slow"))
	}
	if o.Procs < 1 || o.Shard < 0 || o.Shard >= o.Procs {
		errs = append(errs, fmt.Errorf("procs %d, shard %d: want 0 <= shard < procs", o.Procs, o.Shard))
	}
	return o, errors.Join(errs...)
}

// share returns the part of n that shard i of k gets.
func share(n, i, k int) int {
	s := n / k
	if i < n%k {
		s++
	}
	return s
}

// forShard returns the options of shard i of o.Procs.
func (o Options) forShard(i int) Options {
	s := o
	s.Shard = i
	k := o.Procs
	s.Conns = share(o.Conns, i, k)
	s.Workers = share(o.Workers, i, k)
	s.SlowPeers = share(o.SlowPeers, i, k)
	s.ChurnWorkers = max(share(o.ChurnWorkers, i, k), 1)
	s.Rate = o.Rate / float64(k)
	s.ConnectRate = o.ConnectRate / float64(k)
	s.ServerPIDs, s.MetricsURLs, s.GCURLs = nil, nil, nil
	if len(o.Sources) >= k {
		s.Sources = nil
		for j := i; j < len(o.Sources); j += k {
			s.Sources = append(s.Sources, o.Sources[j])
		}
	}
	return s
}
