package probes

import (
	"testing"
	"time"
)

// The wall clock moves against the monotonic one (NTP slews and steps it):
// converted times follow it within refreshEvery, so a probe's moments stay
// on the clock the traced processes stamp their own times with.
func TestClockFollowsTheWallClock(t *testing.T) {
	wall, mono := int64(1_700_000_000_000_000_000), int64(5_000_000_000)
	c := newClockFrom(func() (int64, int64) { return wall, mono })
	at := func(m int64) int64 { return c.wall(uint64(m)).UnixNano() }
	if got := at(mono); got != wall {
		t.Fatalf("wall(now) = %d, want %d", got, wall)
	}

	// The wall clock is stepped 30 ms back and time goes on.
	wall, mono = wall+int64(500*time.Millisecond)-int64(30*time.Millisecond), mono+int64(500*time.Millisecond)
	c.maybeRefresh(uint64(mono))
	if got, want := at(mono), wall+int64(30*time.Millisecond); got != want {
		t.Errorf("refreshed before refreshEvery: wall(now) = %d, want the old offset's %d", got, want)
	}
	wall, mono = wall+int64(refreshEvery), mono+int64(refreshEvery)
	c.maybeRefresh(uint64(mono))
	if got := at(mono); got != wall {
		t.Errorf("after refreshEvery: wall(now) = %d, want %d (the step is %v)", got, wall, time.Duration(got-wall))
	}
}
