package probes

import (
	"debug/buildinfo"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// ModControllerRuntime is the module whose programs kpath follows without
// being told: any process whose build info links it is an operator, its
// component named after its executable.
const ModControllerRuntime = "sigs.k8s.io/controller-runtime"

// AnyOperator marks rows for every controller-runtime program found
// (Options.Operators): reconciles, whatever the program is called.
const AnyOperator Component = "controller-runtime"

// Operators remembers, per executable file, whether it links
// controller-runtime: the scan asks for every process of the node every
// interval, and reads a binary's build info once.
type Operators struct {
	mu    sync.Mutex
	known map[fileID]bool
	comps map[Component]bool // the components found so, for rowFor
}

type fileID struct {
	dev, ino    uint64
	size, mtime int64
	mtimeNsec   int64
}

// maxKnownBinaries bounds the cache: past it, it starts again (a node
// with that many distinct executables reads some build infos twice).
const maxKnownBinaries = 4096

// NewOperators returns an empty cache.
func NewOperators() *Operators {
	return &Operators{known: map[fileID]bool{}, comps: map[Component]bool{}}
}

// Is says whether the executable of a process (its /proc/PID/exe, which
// reaches into the process's mount namespace) links controller-runtime,
// and if so names its component. Unreadable files are not operators.
func (o *Operators) Is(procExe, exe string) (Component, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(procExe, &st); err != nil {
		return "", false
	}
	id := fileID{uint64(st.Dev), st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec}
	o.mu.Lock()
	is, seen := o.known[id]
	o.mu.Unlock()
	if !seen {
		is = links(procExe, ModControllerRuntime)
		o.mu.Lock()
		if len(o.known) >= maxKnownBinaries {
			clear(o.known)
		}
		o.known[id] = is
		o.mu.Unlock()
	}
	if !is {
		return "", false
	}
	c := Component(filepath.Base(exe))
	o.mu.Lock()
	o.comps[c] = true
	o.mu.Unlock()
	return c, true
}

// Has says whether c was found as an operator.
func (o *Operators) Has(c Component) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.comps[c]
}

// links says whether the Go executable at path was built with module mod.
func links(path, mod string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	bi, err := buildinfo.Read(f)
	if err != nil {
		return false // not Go, or no build info
	}
	for _, d := range bi.Deps {
		if d.Path == mod {
			return true
		}
	}
	return false
}
