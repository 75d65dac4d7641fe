package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/PID/stat and /proc/stat times
// (100 on every Linux architecture Go supports here).
const clockTick = 10 * time.Millisecond

type procStat struct {
	state       byte
	utime, stim uint64 // clock ticks, all threads of the process
}

// readStat reads state, utime and stime from /proc/PID/stat.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	st := procStat{state: f[0][0]}
	if st.utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return st, err
	}
	if st.stim, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return st, err
	}
	return st, nil
}

// cpuTimes is a process's user and system CPU time.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

func (c cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{c.user - o.user, c.sys - o.sys} }

// procCPU is pid's CPU time so far, zero for pid 0 or a process that is gone.
func procCPU(pid int) cpuTimes {
	if pid == 0 {
		return cpuTimes{}
	}
	st, err := readStat(pid)
	if err != nil {
		return cpuTimes{}
	}
	return cpuTimes{time.Duration(st.utime) * clockTick, time.Duration(st.stim) * clockTick}
}

// hostCPU is the machine's CPU time from the first line of /proc/stat:
// busy (user+nice+system+irq+softirq), idle (idle+iowait) and steal.
type hostCPU struct{ busy, idle, steal time.Duration }

func readHostCPU() hostCPU {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return hostCPU{}
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return hostCPU{}
	}
	fs := strings.Fields(sc.Text())
	if len(fs) < 9 || fs[0] != "cpu" {
		return hostCPU{}
	}
	v := make([]time.Duration, 8)
	for i := range v {
		n, _ := strconv.ParseUint(fs[i+1], 10, 64)
		v[i] = time.Duration(n) * clockTick
	}
	// user nice system idle iowait irq softirq steal
	return hostCPU{busy: v[0] + v[1] + v[2] + v[5] + v[6], idle: v[3] + v[4], steal: v[7]}
}

// uprobesMapped reports whether pid has the "[uprobes]" mapping the kernel
// adds to a process the first time one of its uprobes is single-stepped
// out of line (its XOL area). It stays after the probes are gone, so on a
// fresh process it means "some uprobe hit was single-stepped in this
// process since it started". A hit the kernel emulates (a push, a CALL, a
// branch) maps nothing: an agent whose probes all sit on such sites leaves
// no trace here, which is why the bench also looks for BPF link holders.
func uprobesMapped(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	return err == nil && strings.Contains(string(b), "[uprobes]")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}
