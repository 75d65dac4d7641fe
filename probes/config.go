package probes

import (
	"fmt"

	"golang.org/x/mod/semver"

	"github.com/kpath/kpath/bpf"
)

const (
	maxCaptures = bpf.MaxCaptures
	maxDeref    = bpf.MaxDeref
)

// slots says where each field of a row lands in the BPF event: strings in
// str[i], integers in num[i]. Entry and exit captures share one event.
type slots map[Field]uint8

func assignSlots(r *Row) (slots, error) {
	s := slots{}
	var nstr, nnum uint8
	for _, c := range append(append([]Capture{}, r.Entry...), r.Exit...) {
		if c.Field.IsString() {
			if int(nstr) >= bpf.MaxStr {
				return nil, fmt.Errorf("row %s: more than %d string captures", r.ID, bpf.MaxStr)
			}
			s[c.Field] = nstr
			nstr++
			continue
		}
		if int(nnum) >= bpf.MaxNum {
			return nil, fmt.Errorf("row %s: more than %d integer captures", r.ID, bpf.MaxNum)
		}
		s[c.Field] = nnum
		nnum++
	}
	return s, nil
}

var bpfReg = [...]uint8{
	RAX: bpf.RegAX, RBX: bpf.RegBX, RCX: bpf.RegCX, RDI: bpf.RegDI, RSI: bpf.RegSI,
	R8: bpf.RegR8, R9: bpf.RegR9, R10: bpf.RegR10, R11: bpf.RegR11, RSP: bpf.RegSP, RDX: bpf.RegDX,
}

var bpfKind = [...]uint8{InReg: bpf.CapReg, AtOffset: bpf.CapMem, StrInRegs: bpf.CapStrRegs, StrAt: bpf.CapStrMem}

// probeConfig builds the BPF config of one side (entry or RETs) of a row.
func probeConfig(caps []Capture, s slots, mode uint8, entrySlot uint32, g goroutineLayout, announce bool) bpf.ProbeConfig {
	cfg := bpf.ProbeConfig{
		EntrySlot:     entrySlot,
		Mode:          mode,
		Ncap:          uint8(len(caps)),
		GoidOff:       g.goid,
		ParentGoidOff: g.parentGoid,
	}
	if announce && mode == bpf.ModeEntry {
		cfg.Flags |= bpf.FlagAnnounce
	}
	for i, c := range caps {
		bc := &cfg.Cap[i]
		bc.Kind = bpfKind[c.Kind]
		bc.Reg = bpfReg[c.Reg]
		bc.LenReg = bpfReg[c.LenReg]
		bc.Nderef = uint8(len(c.Deref))
		copy(bc.Off[:], c.Deref)
		bc.FinalOff = c.Offset
		bc.Dst = s[c.Field]
		bc.Size = c.Size
		if bc.Size == 0 {
			bc.Size = 8
		}
	}
	return cfg
}

// withMatch makes a config keep only the events whose capture 0 is one of
// the row's Only values (checked by Validate to fit).
func withMatch(cfg bpf.ProbeConfig, only *Match) bpf.ProbeConfig {
	if only == nil {
		return cfg
	}
	cfg.MatchN = uint8(len(only.Values))
	for i, v := range only.Values {
		cfg.MatchLen[i] = uint8(len(v))
		for j := range len(v) {
			cfg.Match[i][j] = int8(v[j])
		}
	}
	return cfg
}

// goroutineLayout holds the offsets of runtime.g fields the probes read.
type goroutineLayout struct {
	goid, parentGoid uint16
}

// goroutineLayouts by Go release, from the DWARF of each toolchain's
// runtime.g (checked in tests against binaries that carry DWARF). A Go
// release missing here is refused rather than guessed: a wrong offset would
// silently join unrelated goroutines.
var goroutineLayouts = map[string]goroutineLayout{
	"go1.24": {goid: 160, parentGoid: 280},
	"go1.25": {goid: 152, parentGoid: 272},
	"go1.26": {goid: 152, parentGoid: 280},
}

func layoutFor(goVersion string) (goroutineLayout, error) {
	v := goVersion
	if len(v) > 2 && v[:2] == "go" {
		v = "v" + v[2:]
	}
	mm := semver.MajorMinor(v)
	if mm == "" {
		return goroutineLayout{}, fmt.Errorf("go version %q is not understood", goVersion)
	}
	l, ok := goroutineLayouts["go"+mm[1:]]
	if !ok {
		fix := "upgrade kpath"
		if semver.Compare(mm, "v1.24") < 0 {
			fix = "a program built before go1.24 is older than every Kubernetes and etcd release kpath covers"
		}
		return goroutineLayout{}, fmt.Errorf("runtime.g layout of %s is not known to this kpath (known: go1.24–go1.26): %s", goVersion, fix)
	}
	return l, nil
}
