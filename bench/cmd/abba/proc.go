package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/PID/stat (100
// on every Linux architecture Go supports).
const clockTick = 100

// procSample is what the check reads of the server and of itself at the
// start and the end of a measured window.
type procSample struct {
	at        time.Time
	serverCPU float64 // s, utime+stime of the whole server process
	vcs, ivcs int64   // server context switches, summed over its threads
	threads   int
	clientCPU float64 // s, this process's user+system time
}

func sample(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	var err error
	if s.serverCPU, err = procCPU(pid); err != nil {
		return s, err
	}
	s.vcs, s.ivcs, s.threads = ctxSwitches(pid)
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, err
	}
	s.clientCPU = tv(ru.Utime) + tv(ru.Stime)
	return s, nil
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// procCPU returns utime+stime of process pid in seconds (all its threads,
// from /proc/PID/stat).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	s, err2 := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(u+s) / clockTick, nil
}

// ctxSwitches sums the voluntary and involuntary context switches of the
// threads of pid that are alive now (a thread that exits inside a window
// takes its count with it, so the figure is a floor).
func ctxSwitches(pid int) (vol, invol int64, threads int) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		threads++
		for line := range strings.SplitSeq(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "voluntary_ctxt_switches":
				vol += n
			case "nonvoluntary_ctxt_switches":
				invol += n
			}
		}
	}
	return vol, invol, threads
}

// loadavg returns the 1-, 5- and 15-minute load averages as /proc/loadavg
// spells them.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
