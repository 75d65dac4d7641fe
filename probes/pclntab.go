package probes

import (
	"bytes"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// binFuncTable is what indexing needs from a pclntab: each function's
// name and code range, and the source file of a pc (to tell an ABI wrapper
// from the body it wraps).
type binFuncTable interface {
	count() int
	funcs(fn func(name string, entry, end uint64))
	file(pc uint64) string
}

// binNewFuncTable reads Go 1.18+ tables in place. debug/gosym makes a Func
// and a Sym of every function and caches every name in a map: 53 MB of
// garbage for kube-apiserver's 46 MB table, in the agent, while it traces.
// Older tables (Go 1.2 to 1.17) go through gosym.
func binNewFuncTable(pcln []byte, text uint64) (binFuncTable, error) {
	if bytes.HasPrefix(pcln, binPclntabMagics[0]) || bytes.HasPrefix(pcln, binPclntabMagics[1]) {
		return binNewPcln118(pcln, text)
	}
	tab, err := gosym.NewTable(nil, gosym.NewLineTable(pcln, text))
	if err != nil {
		return nil, err
	}
	return binGosymTable{tab}, nil
}

type binGosymTable struct{ *gosym.Table }

func (t binGosymTable) count() int { return len(t.Funcs) }

func (t binGosymTable) funcs(fn func(string, uint64, uint64)) {
	for i := range t.Funcs {
		fn(t.Funcs[i].Name, t.Funcs[i].Entry, t.Funcs[i].End)
	}
}

func (t binGosymTable) file(pc uint64) string {
	file, _, _ := t.PCToLine(pc)
	return file
}

// binPcln118 is a Go 1.18+ pclntab (runtime/symtab.go's pcHeader, functab
// and _func): function names are substrings of one copy of the name table.
type binPcln118 struct {
	text                                     uint64
	quantum                                  uint64
	nfunc                                    int
	names                                    string // funcnametab
	cutab, filetab, pctab, functab, funcdata []byte
}

func binNewPcln118(d []byte, text uint64) (*binPcln118, error) {
	if len(d) < 8+8*8 {
		return nil, errors.New("pclntab header truncated")
	}
	word := func(i int) uint64 { return binary.LittleEndian.Uint64(d[8+8*i:]) }
	// pcHeader: nfunc, nfiles, textStart, then the offsets of funcnametab,
	// cutab, filetab, pctab and pclntab (functab followed by the _funcs).
	off := [5]uint64{word(3), word(4), word(5), word(6), word(7)}
	for i, o := range off {
		if o > uint64(len(d)) || (i > 0 && o < off[i-1]) {
			return nil, fmt.Errorf("pclntab header: table offsets %v out of order or past the %d-byte table", off, len(d))
		}
	}
	t := &binPcln118{
		text:     text,
		quantum:  uint64(d[6]),
		names:    string(d[off[0]:off[1]]),
		cutab:    d[off[1]:off[2]],
		filetab:  d[off[2]:off[3]],
		pctab:    d[off[3]:off[4]],
		funcdata: d[off[4]:],
	}
	nfunc := word(0)
	if nfunc == 0 || (2*nfunc+1)*4 > uint64(len(t.funcdata)) {
		return nil, fmt.Errorf("pclntab header: %d functions do not fit the table", nfunc)
	}
	t.nfunc = int(nfunc)
	t.functab = t.funcdata[:(2*nfunc+1)*4]
	return t, nil
}

func (t *binPcln118) count() int { return t.nfunc }

func (t *binPcln118) pc(i int) uint64 {
	return t.text + uint64(binary.LittleEndian.Uint32(t.functab[8*i:]))
}

// fn returns the _func of the i'th function: entryOff, nameOff, args,
// deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset, ... (4 bytes each).
func (t *binPcln118) fn(i int) []byte {
	off := binary.LittleEndian.Uint32(t.functab[8*i+4:])
	return t.funcdata[off:]
}

func (t *binPcln118) field(f []byte, n int) uint32 { return binary.LittleEndian.Uint32(f[4*n:]) }

// funcs panics on a corrupt table; OpenBinary turns that into an error.
func (t *binPcln118) funcs(fn func(string, uint64, uint64)) {
	for i := 0; i < t.nfunc; i++ {
		name := t.names[t.field(t.fn(i), 1):]
		if j := strings.IndexByte(name, 0); j >= 0 {
			name = name[:j]
		}
		fn(name, t.pc(i), t.pc(i+1))
	}
}

func (t *binPcln118) file(pc uint64) (file string) {
	defer func() {
		if recover() != nil {
			file = ""
		}
	}()
	i := sort.Search(t.nfunc, func(i int) bool { return t.pc(i) > pc }) - 1
	if i < 0 || pc >= t.pc(t.nfunc) {
		return ""
	}
	f := t.fn(i)
	fno := t.pcvalue(t.field(f, 5), t.pc(i), pc)
	if fno < 0 {
		return ""
	}
	at := binary.LittleEndian.Uint32(t.cutab[4*(t.field(f, 8)+uint32(fno)):])
	if at == ^uint32(0) {
		return ""
	}
	s := t.filetab[at:]
	if j := bytes.IndexByte(s, 0); j >= 0 {
		s = s[:j]
	}
	return string(s)
}

// pcvalue runs a pc-value table (zig-zag value deltas, pc deltas in
// quanta) to the value at target.
func (t *binPcln118) pcvalue(off uint32, entry, target uint64) int32 {
	p := t.pctab[off:]
	varint := func() uint32 {
		var v uint32
		for shift := 0; ; shift += 7 {
			b := p[0]
			p = p[1:]
			v |= uint32(b&0x7f) << shift
			if b&0x80 == 0 {
				return v
			}
		}
	}
	val, pc := int32(-1), entry
	for first := true; ; first = false {
		uv := varint()
		if uv == 0 && !first {
			return -1
		}
		if uv&1 != 0 {
			uv = ^(uv >> 1)
		} else {
			uv >>= 1
		}
		val += int32(uv)
		pc += uint64(varint()) * t.quantum
		if target < pc {
			return val
		}
	}
}
