package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/load"
)

func TestSpliceKeepsOtherSections(t *testing.T) {
	path := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := os.WriteFile(path, []byte("# Benchmarks\n\nmine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"first", "second"} {
		if err := splice(path, beginMark+"\n"+body+"\n"+endMark+"\n"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if err := os.WriteFile(path, append(b, "\n## Someone else's section\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	if strings.Contains(got, "first") || !strings.Contains(got, "second") || !strings.Contains(got, "mine") ||
		strings.Count(got, "Someone else's section") != 2 || strings.Count(got, beginMark) != 1 {
		t.Fatalf("after two splices:\n%s", got)
	}
}

func TestReportVerdicts(t *testing.T) {
	dir := t.TempDir()
	c := config{docs: filepath.Join(dir, "b.md"), img: dir, results: dir, holds: []int{19000}, rates: []int{10000},
		fixedRate: 10000, dur: time.Second, rateDur: time.Second, servers: []string{"orchestratord", "netpoll-echo", "gws"}}
	mk := func(goMem, mps, p99 float64) *outcome {
		return &outcome{Results: map[string]*load.Result{
			"hold-19000": {Alive: 19000, Server: &load.ServerReport{RSSPerConn: goMem * 2, GoPerConn: goMem, FDsPerConn: 1, CPUPercent: 0.5}},
			"echo-1000":  {Received: 1, Server: &load.ServerReport{MsgsPerCPUSecond: mps}},
			"echo-10000": {Received: 1, Server: &load.ServerReport{MsgsPerCPUSecond: mps}},
			"rate-10000": {Received: 1, Latency: load.Latency{P50: 1, P99: p99}, Server: &load.ServerReport{CPUPer100k: p99}},
		}, Cmds: map[string]string{}}
	}
	od, np, gws := mk(400, 90000, 2), mk(300, 130000, 1), mk(9000, 100000, 3)
	od.Server, np.Server, gws.Server = "orchestratord", "netpoll-echo", "gws"
	if err := writeReport(c, []*outcome{od, np, gws}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(c.docs)
	got := string(b)
	for _, want := range []string{
		"- orchestratord RSS per idle connection at 19000 ≤ 1.00 KB: 0.78 KB: **met**",
		"- netpoll-echo RSS per idle connection at 19000 ≤ 0.50 KB: 0.59 KB: **missed**",
		"- Engine msgs per server CPU-s at 1k conns ≥ 1.2x gws: 130000.000 vs 100000.000 = 1.30x: **met**",
		"- Full daemon msgs per server CPU-s at 1k conns (vs gws's bare echo) ≥ gws: 90000.000 vs 100000.000 = 0.90x: **missed**",
		"- Engine p99 at 10000 msg/s ≤ gws: 1.000 vs 3.000 ms = 0.33x: **met**",
		"- Engine server CPU-s per 100k msgs at 10000 msg/s ≤ gws: 1.000 vs 3.000 s = 0.33x: **met**",
		"| gws | 0.04x | 0.90x | 0.90x | 0.67x | 0.67x |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(got)
	}
}

func TestReadWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watch.log")
	log := "16:20:01 MemAvailable 20000 MB (min 20000), daemons RSS 100 MB, load tool RSS 50 MB, Slab 300 MB, load 1.50\n" +
		"garbage line\n" +
		"16:20:03 MemAvailable 12000 MB (min 12000), daemons RSS 2500 MB, load tool RSS 1500 MB, Slab 9000 MB, load 3.25\n" +
		"16:20:05 MemAvailable 12500 MB (min 12000), daemons RSS 2400 MB, load tool RSS 1600 MB, Slab 8900 MB, load 2.00, TCP mem 350 pages\n"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := readWatch(path)
	if err != nil {
		t.Fatal(err)
	}
	if w.samples != 3 || w.startAvailMB != 20000 || w.minAvailMB != 12000 || w.daemonRSSMB != 2500 || w.clientRSSMB != 1600 ||
		w.slabMB != 9000 || w.maxLoad != 3.25 || w.tcpMemPages != 350 || w.first != "16:20:01" || w.last != "16:20:05" {
		t.Fatalf("%+v", w)
	}
	if err := os.WriteFile(path, []byte("nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readWatch(path); err == nil {
		t.Fatal("a log without samples was accepted")
	}
}
