package probes

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// clock converts bpf_ktime_get_ns (CLOCK_MONOTONIC) into wall time. The two
// clocks drift apart while NTP slews the wall clock (up to 500 ppm, half a
// millisecond a second) and jump when it is stepped; the traced processes
// stamp some starts with their own wall clock (etcd's RPC start, the
// runtime's container StartedAt), so an offset taken once would misplace
// every probe-timed moment against them by all the drift since the agent
// started. The reader refreshes it at most every refreshEvery.
type clock struct {
	offset   atomic.Int64 // wall - monotonic, ns
	nextMono atomic.Int64 // monotonic time of the next refresh
	now      func() (wall, mono int64)
}

const refreshEvery = time.Second

func newClock() *clock { return newClockFrom(systemClocks) }

func newClockFrom(now func() (wall, mono int64)) *clock {
	c := &clock{now: now}
	c.refresh()
	return c
}

// systemClocks reads the monotonic clock on both sides of the wall clock
// and keeps the tightest of a few tries: a reading the scheduler cut in two
// would be off by as long as the reader waited for a CPU, and on a loaded
// node that is a hundred microseconds, enough to put a child span before
// its parent.
func systemClocks() (wall, mono int64) {
	best := int64(-1)
	for range 8 {
		var a, b unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &a)
		w := time.Now().UnixNano()
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &b)
		if gap := b.Nano() - a.Nano(); best < 0 || gap < best {
			best, wall, mono = gap, w, a.Nano()+gap/2
		}
		if best < 2000 {
			break
		}
	}
	return wall, mono
}

func (c *clock) refresh() {
	wall, mono := c.now()
	c.offset.Store(wall - mono)
	c.nextMono.Store(mono + int64(refreshEvery))
}

// maybeRefresh refreshes the offset when it is due, given a recent
// monotonic reading (an event's); it costs a comparison otherwise.
func (c *clock) maybeRefresh(mono uint64) {
	if int64(mono) >= c.nextMono.Load() {
		c.refresh()
	}
}

func (c *clock) wall(mono uint64) time.Time { return time.Unix(0, int64(mono)+c.offset.Load()) }

// monoNow is a plain monotonic reading: it needs none of the care the
// offset's readings take.
func (c *clock) monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
