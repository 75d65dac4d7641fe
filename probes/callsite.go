package probes

import (
	"fmt"
	"maps"

	"golang.org/x/arch/x86/x86asm"
)

// CallSite is one direct CALL of a function inside another. A probe there
// fires only on that path, and costs what an entry probe on the push does:
// the kernel emulates a CALL rel32 instead of single-stepping it.
type CallSite struct {
	Offset uint64 // file offset of the CALL instruction
	// StrArgs are the string constants the code before the CALL passes,
	// by the register of their pointer (LEAQ sym(IP), AX; MOVL $n, BX: a
	// string in RAX,RBX); a string argument is a pointer register and the
	// next one in ABI order.
	StrArgs map[Reg]string
	// Saved says where the caller saved the results of the CALL before
	// this one, result register → offset from RSP: Go keeps no register
	// across a call, so a result used after the next call is stored in the
	// frame right after the call that returned it.
	Saved map[Reg]int32
}

// CallSites lists the direct CALLs of callee inside caller, with what the
// code before each passes and saved. The sweep is the one Returns makes:
// an undecodable byte is an error rather than a guess.
func (b *Binary) CallSites(caller, callee Func) ([]CallSite, error) {
	code, off, err := b.code(caller)
	if err != nil {
		return nil, err
	}
	var (
		sites []CallSite
		saved = map[Reg]int32{}
		// live: registers that still hold the previous call's results.
		live = map[Reg]bool{}
		// rodata / imm: string constants' pointers and lengths being
		// loaded for the next call, by register.
		rodata, imm   = map[Reg]uint64{}, map[Reg]uint64{}
		sincePrevCall bool
	)
	for pc := 0; pc < len(code); {
		n, _, err := binDecode(code[pc:])
		if err != nil {
			k := min(len(code)-pc, 15)
			return nil, fmt.Errorf("probes: %s: %s: cannot decode instruction at %#x (bytes % x): %w",
				b.Path, caller.Name, caller.Entry+uint64(pc), code[pc:pc+k], err)
		}
		inst, derr := x86asm.Decode(code[pc:pc+n], 64)
		next := caller.Entry + uint64(pc+n)
		if derr != nil {
			// VEX/EVEX and the 0F38/0F3A maps binDecode measured itself:
			// vector code, which writes no general register we track.
			pc += n
			continue
		}
		if inst.Op == x86asm.CALL {
			if rel, ok := inst.Args[0].(x86asm.Rel); ok && next+uint64(int64(rel)) == callee.Entry {
				cs := CallSite{Offset: off + uint64(pc), Saved: map[Reg]int32{}, StrArgs: map[Reg]string{}}
				for r := RAX; r < R11; r++ {
					ptr, okp := rodata[r]
					l, okl := imm[r+1]
					if okp && okl && l > 0 && l < 256 {
						if s, err := b.rodataString(ptr, l); err == nil {
							cs.StrArgs[r] = s
						}
					}
				}
				if sincePrevCall {
					cs.Saved = maps.Clone(saved)
				}
				sites = append(sites, cs)
			}
			// Every register is dead across a call but its results.
			clear(saved)
			clear(live)
			for _, r := range []Reg{RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11} {
				live[r] = true
			}
			clear(rodata)
			clear(imm)
			sincePrevCall = true
			pc += n
			continue
		}
		dst, dstIsReg := regArg(inst.Args[0])
		switch {
		case inst.Op == x86asm.MOV && isSPMem(inst.Args[0]):
			if src, ok := regArg(inst.Args[1]); ok && live[src] {
				if _, dup := saved[src]; !dup {
					saved[src] = int32(inst.Args[0].(x86asm.Mem).Disp)
				}
			}
		case dstIsReg && writes(inst.Op):
			// A register written no longer holds a result or a constant,
			// unless this loads a string's pointer or length.
			live[dst] = false
			delete(rodata, dst)
			delete(imm, dst)
			if m, ok := inst.Args[1].(x86asm.Mem); ok && inst.Op == x86asm.LEA && m.Base == x86asm.RIP && m.Index == 0 {
				rodata[dst] = uint64(int64(next) + m.Disp)
			}
			if v, ok := inst.Args[1].(x86asm.Imm); ok && inst.Op == x86asm.MOV {
				imm[dst] = uint64(v)
			}
		}
		if inst.Op == x86asm.JMP || inst.Op == x86asm.RET {
			// The straight line after the previous call ends: what follows
			// is reached from elsewhere.
			sincePrevCall = false
			clear(live)
		}
		pc += n
	}
	return sites, nil
}

// writes says whether an instruction with a register first operand
// overwrites it (compares and tests only read).
func writes(op x86asm.Op) bool {
	switch op {
	case x86asm.CMP, x86asm.TEST, x86asm.BT, x86asm.PUSH:
		return false
	}
	return true
}

func isSPMem(a x86asm.Arg) bool {
	m, ok := a.(x86asm.Mem)
	return ok && m.Base == x86asm.RSP && m.Index == 0 && m.Segment == 0
}

// regArg maps any width of a general register to the Reg kpath names,
// ok false for registers the ABI does not pass arguments in.
func regArg(a x86asm.Arg) (Reg, bool) {
	r, ok := a.(x86asm.Reg)
	if !ok {
		return 0, false
	}
	var full x86asm.Reg
	switch {
	case r >= x86asm.AL && r <= x86asm.BL:
		full = x86asm.RAX + (r - x86asm.AL)
	case r >= x86asm.AH && r <= x86asm.BH:
		full = x86asm.RAX + (r - x86asm.AH)
	case r >= x86asm.SPB && r <= x86asm.R15B:
		full = x86asm.RSP + (r - x86asm.SPB)
	case r >= x86asm.AX && r <= x86asm.R15W:
		full = x86asm.RAX + (r - x86asm.AX)
	case r >= x86asm.EAX && r <= x86asm.R15L:
		full = x86asm.RAX + (r - x86asm.EAX)
	case r >= x86asm.RAX && r <= x86asm.R15:
		full = r
	default:
		return 0, false
	}
	switch full {
	case x86asm.RAX:
		return RAX, true
	case x86asm.RBX:
		return RBX, true
	case x86asm.RCX:
		return RCX, true
	case x86asm.RDI:
		return RDI, true
	case x86asm.RSI:
		return RSI, true
	case x86asm.R8:
		return R8, true
	case x86asm.R9:
		return R9, true
	case x86asm.R10:
		return R10, true
	case x86asm.R11:
		return R11, true
	case x86asm.RDX:
		return RDX, true
	}
	return 0, false
}

// rodataString reads n bytes at virtual address va.
func (b *Binary) rodataString(va, n uint64) (string, error) {
	off, err := b.FileOffset(va)
	if err != nil {
		return "", err
	}
	buf := make([]byte, n)
	if _, err := b.file.ReadAt(buf, int64(off)); err != nil {
		return "", fmt.Errorf("probes: %s: reading %d bytes at %#x: %w", b.Path, n, va, err)
	}
	return string(buf), nil
}
