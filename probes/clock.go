package probes

import (
	"time"

	"golang.org/x/sys/unix"
)

// clock converts bpf_ktime_get_ns (CLOCK_MONOTONIC) into wall time.
type clock struct {
	offset int64 // wall - monotonic, ns
}

func newClock() clock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	wall := time.Now().UnixNano()
	return clock{offset: wall - ts.Nano()}
}

func (c clock) wall(mono uint64) time.Time { return time.Unix(0, int64(mono)+c.offset) }

func (c clock) monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
