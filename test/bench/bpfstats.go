package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// enableBPFStats turns on the kernel's BPF run-time statistics (run count
// and cumulative run time per program) until the returned closer is closed;
// nothing is left switched on if the bench dies. They cost two clock reads
// per program run.
func enableBPFStats() (io.Closer, error) {
	return ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
}

// bpfProgStats sums the run-time statistics of the BPF programs process pid
// holds (found through the prog_id lines of /proc/PID/fdinfo).
func bpfProgStats(pid int) (runtime time.Duration, runs uint64, err error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	ids := map[ebpf.ProgramID]bool{}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "prog_id:"); ok {
				if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil && id != 0 {
					ids[ebpf.ProgramID(id)] = true
				}
			}
		}
		f.Close()
	}
	if len(ids) == 0 {
		return 0, 0, fmt.Errorf("process %d holds no BPF program", pid)
	}
	for id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return 0, 0, fmt.Errorf("BPF program %d: %w", id, err)
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("BPF program %d stats: %w", id, err)
		}
		runtime += st.Runtime
		runs += st.RunCount
	}
	return runtime, runs, nil
}
