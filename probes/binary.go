package probes

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	rdebug "runtime/debug"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

var (
	// ErrNotGo means the file is a valid ELF executable but was not produced
	// by the Go toolchain (no pclntab, no build info), so there is nothing to
	// resolve Go symbols against.
	ErrNotGo = errors.New("not a Go executable")
	// ErrSymbolNotFound means the pclntab has no function of that exact name:
	// usually the function was inlined everywhere, renamed between versions,
	// or dead-code eliminated.
	ErrSymbolNotFound = errors.New("symbol not found")
	// ErrNotCovered means the binary links a row's module at a version none
	// of the row's variants covers.
	ErrNotCovered = errors.New("not covered")
	// ErrPacked means an executable packer (UPX) compressed the program: its
	// function table and build info exist only once it has unpacked itself in
	// memory, where a uprobe on the file cannot follow.
	ErrPacked = errors.New("packed executable")
	// ErrVersionUnknown means the build info does not say which version of a
	// module was linked in.
	ErrVersionUnknown = errors.New("module version unknown")
)

// Binary is an opened Go executable: functions from .gopclntab, module
// versions from build info. Both survive `-ldflags=-s -w`, which is how
// Kubernetes and etcd release binaries are built, so nothing here needs
// .symtab or DWARF. Its methods are safe for concurrent use, except Close.
type Binary struct {
	Path      string
	GoVersion string // e.g. "go1.25.3"
	MainPath  string // main module path, e.g. "k8s.io/kubernetes"
	// Modules holds the main module and every dependency, by module path.
	Modules map[string]Module
	// Stripped is true when the file has no .symtab (built with -ldflags=-s).
	Stripped bool

	file      *os.File
	bi        *buildinfo.BuildInfo
	textStart uint64
	loads     []elf.ProgHeader // PT_LOAD segments with file contents
	funcs     map[string]binFuncRange
	// dupFuncs counts the functions sharing a name that is in the pclntab
	// more than once other than as an ABI wrapper; picking one would be a
	// guess, so Func refuses.
	dupFuncs map[string]int
}

// Module is one module as recorded in the build info.
type Module struct {
	Path, Version string
	// Replace is "=> X vY" when replaced by another module version, the local
	// directory (e.g. "./staging/src/k8s.io/apiserver") when replaced by a
	// path, and empty if not replaced.
	Replace string
}

// Func is one function from the pclntab.
type Func struct {
	Name string
	// Entry and End are virtual addresses; End is the next function's entry,
	// so [Entry,End) includes the INT3 alignment padding after the code.
	Entry, End uint64
	// FileOffset is Entry's offset in the file, which is what a uprobe is
	// attached at.
	FileOffset uint64
}

type binFuncRange struct{ entry, end uint64 }

// OpenBinary opens the Go executable at path (which may be /proc/PID/exe or a
// path under /proc/PID/root) and indexes its functions. Only x86-64 ELF is
// supported.
func OpenBinary(path string) (_ *Binary, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("probes: opening binary: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	// debug/elf and debug/gosym trust the tables they parse and some
	// malformed inputs still make them index out of range; a corrupt file in
	// a container must be an error, not a crash of the tracer.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("probes: %s: corrupt executable: %v", path, r)
		}
	}()

	var magic [4]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("probes: %s: reading ELF header: %w", path, err)
		}
		return nil, fmt.Errorf("probes: %s: not an ELF file", path)
	}
	ef, err := elf.NewFile(f)
	if err != nil {
		return nil, fmt.Errorf("probes: %s: corrupt or truncated ELF file: %w", path, err)
	}
	if ef.Class != elf.ELFCLASS64 || ef.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("probes: %s: unsupported architecture %v/%v, only x86-64 is supported", path, ef.Class, ef.Machine)
	}

	b := &Binary{Path: path, file: f}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 {
			b.loads = append(b.loads, p.ProgHeader)
		}
	}
	if ef.Section(".symtab") == nil {
		b.Stripped = true
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("probes: %s: %w", path, err)
	}
	size := st.Size()
	// A damaged .symtab only loses a hint; the pclntab is authoritative.
	syms, _ := binSymbolValues(ef, size, "runtime.text", "runtime.pclntab", "runtime.epclntab")

	pcln, pclnVA, err := binFindPclntab(ef, size, syms)
	if err != nil {
		return nil, fmt.Errorf("probes: %s: %w", path, err)
	}

	bi, biErr := buildinfo.Read(f)
	if pcln == nil {
		if biErr != nil {
			if binPackedByUPX(f) {
				return nil, fmt.Errorf("probes: %s: %w: UPX compressed it, so its Go function table and build info cannot be read from the file, and a uprobe on the file would miss the code it unpacks in memory: run the unpacked binary (upx -d)", path, ErrPacked)
			}
			return nil, fmt.Errorf("probes: %s: %w: no .gopclntab and no Go build info", path, ErrNotGo)
		}
		return nil, fmt.Errorf("probes: %s: has Go build info but no pclntab was found", path)
	}
	if biErr != nil {
		if strings.Contains(biErr.Error(), "not a Go executable") {
			return nil, fmt.Errorf("probes: %s: %w: has a pclntab but no Go build info (%v)", path, ErrNotGo, biErr)
		}
		return nil, fmt.Errorf("probes: %s: reading Go build info: %w", path, biErr)
	}
	b.bi = bi
	b.GoVersion = bi.GoVersion
	b.MainPath = bi.Main.Path
	b.Modules = make(map[string]Module, len(bi.Deps)+1)
	if bi.Main.Path != "" {
		b.Modules[bi.Main.Path] = binModule(&bi.Main)
	}
	for _, d := range bi.Deps {
		b.Modules[d.Path] = binModule(d)
	}

	b.textStart, err = binTextStart(ef, size, syms, pcln, pclnVA)
	if err != nil {
		return nil, fmt.Errorf("probes: %s: %w", path, err)
	}
	if err := b.indexFuncs(pcln); err != nil {
		return nil, fmt.Errorf("probes: %s: %w", path, err)
	}
	return b, nil
}

// binPackedByUPX looks for UPX's header magic where UPX writes it, right
// after the program headers of the stub it puts in front.
func binPackedByUPX(f io.ReaderAt) bool {
	var head [4096]byte
	n, _ := f.ReadAt(head[:], 0)
	return bytes.Contains(head[:n], []byte("UPX!"))
}

func binModule(m *rdebug.Module) Module {
	out := Module{Path: m.Path, Version: m.Version}
	if r := m.Replace; r != nil {
		// A directory replacement records its version as "(devel)".
		if binUsableVersion(r.Version) {
			out.Replace = "=> " + r.Path + " " + r.Version
		} else {
			out.Replace = r.Path
		}
	}
	return out
}

// Close releases the file. Func values stay valid; Returns does not.
func (b *Binary) Close() error {
	if b.file == nil {
		return nil
	}
	err := b.file.Close()
	b.file = nil
	return err
}

// binPclntabMagics are the pcHeader magics with amd64's minLC (1) and
// pointer size (8), for Go 1.2, 1.16, 1.18 and 1.20+.
var binPclntabMagics = [][]byte{
	{0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8},
	{0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8},
	{0xfa, 0xff, 0xff, 0xff, 0, 0, 1, 8},
	{0xfb, 0xff, 0xff, 0xff, 0, 0, 1, 8},
}

// binFindPclntab returns the pclntab bytes and their virtual address, or nil
// if the file has none. Internally linked binaries have a .gopclntab section;
// older PIE builds named it .data.rel.ro.gopclntab; an external linker may
// merge it into .data.rel.ro or .rodata, where only the runtime.pclntab
// symbol or the header magic locates it.
func binFindPclntab(ef *elf.File, fileSize int64, syms map[string]uint64) ([]byte, uint64, error) {
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		s := ef.Section(name)
		if s == nil || s.Type == elf.SHT_NOBITS {
			continue
		}
		data, err := binSectionBytes(s, fileSize)
		if err != nil {
			return nil, 0, fmt.Errorf("corrupt ELF file: reading %s: %w", name, err)
		}
		if !binPclntabMagic(data) {
			return nil, 0, fmt.Errorf("corrupt Go executable: %s does not start with an amd64 pclntab header (% x)", name, data[:min(len(data), 8)])
		}
		return data, s.Addr, nil
	}

	start, end := syms["runtime.pclntab"], syms["runtime.epclntab"]
	if start != 0 && end > start {
		for _, s := range ef.Sections {
			if s.Type != elf.SHT_NOBITS && s.Addr <= start && end <= s.Addr+s.Size {
				if err := binInFile(s, fileSize); err != nil {
					return nil, 0, fmt.Errorf("corrupt ELF file: runtime.pclntab: %w", err)
				}
				data := make([]byte, end-start)
				if _, err := s.ReadAt(data, int64(start-s.Addr)); err != nil {
					return nil, 0, fmt.Errorf("corrupt ELF file: reading runtime.pclntab from %s: %w", s.Name, err)
				}
				return data, start, nil
			}
		}
	}

	// Last resort for stripped externally linked binaries: scan read-only
	// data for a pcHeader. The magic alone is 8 bytes and could occur by
	// chance, so a candidate must also parse into a table containing
	// runtime.main.
	for _, s := range ef.Sections {
		if s.Type != elf.SHT_PROGBITS || s.Flags&elf.SHF_ALLOC == 0 || s.Flags&elf.SHF_EXECINSTR != 0 {
			continue
		}
		if s.Name != ".rodata" && !strings.HasPrefix(s.Name, ".data.rel.ro") {
			continue
		}
		data, err := binSectionBytes(s, fileSize)
		if err != nil {
			return nil, 0, fmt.Errorf("corrupt ELF file: reading %s: %w", s.Name, err)
		}
		for _, m := range binPclntabMagics {
			for i := 0; ; {
				j := bytes.Index(data[i:], m)
				if j < 0 {
					break
				}
				i += j
				if i%8 == 0 && binLooksLikePclntab(data[i:], s.Addr+uint64(i)) {
					return data[i:], s.Addr + uint64(i), nil
				}
				i++
			}
		}
	}
	return nil, 0, nil
}

func binPclntabMagic(data []byte) bool {
	for _, m := range binPclntabMagics {
		if bytes.HasPrefix(data, m) {
			return true
		}
	}
	return false
}

func binLooksLikePclntab(data []byte, textGuess uint64) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	t, err := binNewFuncTable(data, textGuess)
	if err != nil {
		return false
	}
	t.funcs(func(name string, _, _ uint64) { ok = ok || name == "runtime.main" })
	return ok
}

// Offsets in runtime.moduledata, stable since Go 1.16: pcHeader first, then
// six slices, findfunctab, minpc, maxpc, text, etext.
const (
	binModdataMinPC = 8 + 6*24 + 8
	binModdataText  = binModdataMinPC + 16
	binModdataEText = binModdataText + 8
)

// binTextStart finds runtime.text, the base the pclntab's function offsets
// are relative to. It is usually the start of .text, but with external
// linking the C startup code comes first (0x100 bytes with GNU ld), and
// using the section address would shift every function.
func binTextStart(ef *elf.File, fileSize int64, syms map[string]uint64, pcln []byte, pclnVA uint64) (uint64, error) {
	if v := syms["runtime.text"]; v != 0 {
		return v, nil
	}
	text := ef.Section(".text")

	// runtime.firstmoduledata points at the pcHeader and records text/etext;
	// it lives in .go.module since Go 1.26 and in .noptrdata before. Only
	// trust a candidate whose text range fits inside .text.
	if text != nil && len(pcln) >= 8 && !bytes.Equal(pcln[:4], binPclntabMagics[3][:4]) {
		for _, name := range []string{".go.module", ".noptrdata", ".data"} {
			s := ef.Section(name)
			if s == nil || s.Type == elf.SHT_NOBITS {
				continue
			}
			data, err := binSectionBytes(s, fileSize)
			if err != nil {
				return 0, fmt.Errorf("corrupt ELF file: reading %s: %w", name, err)
			}
			for i := 0; i+binModdataEText+8 <= len(data); i += 8 {
				if binary.LittleEndian.Uint64(data[i:]) != pclnVA {
					continue
				}
				minpc := binary.LittleEndian.Uint64(data[i+binModdataMinPC:])
				start := binary.LittleEndian.Uint64(data[i+binModdataText:])
				end := binary.LittleEndian.Uint64(data[i+binModdataEText:])
				if text.Addr <= start && start <= minpc && minpc < end && end <= text.Addr+text.Size {
					return start, nil
				}
			}
		}
	}
	if text == nil {
		return 0, errors.New("corrupt Go executable: no .text section")
	}
	return text.Addr, nil
}

func (b *Binary) indexFuncs(pcln []byte) error {
	tab, err := binNewFuncTable(pcln, b.textStart)
	if err != nil {
		return fmt.Errorf("parsing pclntab: %w", err)
	}
	b.funcs = make(map[string]binFuncRange, tab.count())
	var dups map[string][]binFuncRange
	tab.funcs(func(name string, entry, end uint64) {
		r := binFuncRange{entry, end}
		first, dup := b.funcs[name]
		if !dup {
			b.funcs[name] = r
			return
		}
		if dups == nil {
			dups = make(map[string][]binFuncRange)
		}
		if dups[name] == nil {
			dups[name] = []binFuncRange{first}
		}
		dups[name] = append(dups[name], r)
	})
	if len(b.funcs) == 0 {
		return errors.New("pclntab lists no functions")
	}
	// A function called across the ABI0/ABIInternal boundary (assembly
	// calling Go or Go calling assembly) gets a compiler-generated wrapper
	// with the same name. The wrapper forwards to the body, so the body is the
	// one place that sees every call; the wrapper is recognisable because
	// its code belongs to the pseudo-file "<autogenerated>".
	for name, rs := range dups {
		var bodies []binFuncRange
		for _, r := range rs {
			if tab.file(r.entry) != "<autogenerated>" {
				bodies = append(bodies, r)
			}
		}
		if len(bodies) == 1 {
			b.funcs[name] = bodies[0]
			continue
		}
		if b.dupFuncs == nil {
			b.dupFuncs = make(map[string]int)
		}
		b.dupFuncs[name] = len(rs)
	}
	return nil
}

// Func looks up a function by its exact pclntab name, e.g.
// "go.etcd.io/etcd/server/v3/storage/mvcc.(*storeTxnWrite).put". A name
// with "{n}" in it stands for the one function whose name has a decimal
// number there: the compiler numbers the closures of an inlined function
// after its caller's ("….serveResource.CreateResource.createHandler.func9").
func (b *Binary) Func(name string) (Func, error) {
	if strings.Contains(name, "{n}") {
		found, err := b.numbered(name)
		if err != nil {
			return Func{}, err
		}
		name = found
	}
	if n := b.dupFuncs[name]; n > 0 {
		return Func{}, fmt.Errorf("probes: %s: symbol %q is ambiguous: %d functions have this name", b.Path, name, n)
	}
	r, ok := b.funcs[name]
	if !ok {
		return Func{}, fmt.Errorf("probes: %s: %w: %q", b.Path, ErrSymbolNotFound, name)
	}
	fn := Func{Name: name, Entry: r.entry, End: r.end}
	seg, ok := b.segment(r.entry)
	if !ok || seg.Flags&elf.PF_X == 0 {
		return Func{}, fmt.Errorf("probes: %s: function %s at %#x is not in an executable segment", b.Path, name, r.entry)
	}
	if r.end < r.entry || r.end > seg.Vaddr+seg.Filesz {
		return Func{}, fmt.Errorf("probes: %s: function %s range [%#x,%#x) is outside its segment", b.Path, name, r.entry, r.end)
	}
	fn.FileOffset = r.entry - seg.Vaddr + seg.Off
	return fn, nil
}

// numbered finds the one function whose name matches a name with "{n}".
func (b *Binary) numbered(pattern string) (string, error) {
	before, after, _ := strings.Cut(pattern, "{n}")
	var found []string
	for name := range b.funcs {
		rest, ok := strings.CutPrefix(name, before)
		if !ok {
			continue
		}
		digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
		if digits > 0 && rest[digits:] == after {
			found = append(found, name)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("probes: %s: %w: %q", b.Path, ErrSymbolNotFound, pattern)
	}
	slices.Sort(found)
	return "", fmt.Errorf("probes: %s: symbol %q is ambiguous: %s match", b.Path, pattern, strings.Join(found, ", "))
}

func (b *Binary) segment(va uint64) (elf.ProgHeader, bool) {
	for _, p := range b.loads {
		if p.Vaddr <= va && va < p.Vaddr+p.Filesz {
			return p, true
		}
	}
	return elf.ProgHeader{}, false
}

// FileOffset converts a virtual address to its offset in the file, using
// the PT_LOAD segment that contains it.
func (b *Binary) FileOffset(va uint64) (uint64, error) {
	p, ok := b.segment(va)
	if !ok {
		return 0, fmt.Errorf("probes: %s: address %#x is not in any loaded segment", b.Path, va)
	}
	return va - p.Vaddr + p.Off, nil
}

// EntrySite is where f's entry probe goes: the file offset of the frame
// pointer push right after Go's stack-growth check (LEAQ -n(SP), R12;
// CMPQ SP|R12, 16(R14); JBE morestack; PUSHQ BP), or f's entry when the
// prologue is anything else. No argument register or RSP has changed there,
// so entry captures read the same values. Why: the kernel emulates a PUSH
// (a recent addition to x86 uprobes: the 6.18 here has it) and a Jcc instead
// of single-stepping them out of line; on this VM a hit there costs 0.75 µs
// instead of 23.5 µs (BenchmarkUprobeSite). A kernel without the PUSH
// emulation single-steps it, which costs what the first instruction did.
// The PUSH, not the JBE, because a call that grows its stack runs the check
// twice but the PUSH once (the apiserver's handlers start on fresh
// goroutines, whose stacks grow often).
func (b *Binary) EntrySite(f Func) (off uint64, atPush bool, err error) {
	if b.file == nil {
		return 0, false, fmt.Errorf("probes: %s: binary is closed", b.Path)
	}
	code := make([]byte, min(f.End-f.Entry, 24))
	if _, err := b.file.ReadAt(code, int64(f.FileOffset)); err != nil {
		return 0, false, fmt.Errorf("probes: %s: reading the prologue of %s: %w", b.Path, f.Name, err)
	}
	n := binStackCheck(code)
	if n < len(code) && code[n] == 0x55 { // PUSHQ BP
		return f.FileOffset + uint64(n), true, nil
	}
	return f.FileOffset, false, nil
}

// binStackCheck is the length of the stack-growth check that starts code,
// 0 if there is none.
func binStackCheck(code []byte) int {
	i := 0
	switch {
	case bytes.HasPrefix(code, []byte{0x4c, 0x8d, 0x64, 0x24}): // LEAQ disp8(SP), R12
		i = 5
	case bytes.HasPrefix(code, []byte{0x4c, 0x8d, 0xa4, 0x24}): // LEAQ disp32(SP), R12
		i = 8
	}
	if i > len(code) {
		return 0
	}
	rest := code[i:]
	if !bytes.HasPrefix(rest, []byte{0x49, 0x3b, 0x66, 0x10}) && !bytes.HasPrefix(rest, []byte{0x4d, 0x3b, 0x66, 0x10}) {
		return 0 // CMPQ SP, 16(R14) or CMPQ R12, 16(R14)
	}
	i += 4
	switch {
	case i+2 <= len(code) && code[i] == 0x76: // JBE rel8
		return i + 2
	case i+6 <= len(code) && code[i] == 0x0f && code[i+1] == 0x86: // JBE rel32
		return i + 6
	}
	return 0
}

// Returns gives the file offsets of every RET in f, for uprobes that stand
// in for uretprobes: a uretprobe rewrites the return address on the stack,
// which Go's stack growth and traceback cannot cope with. Go emits no data
// in amd64 text, so a linear sweep from the entry sees exactly the
// instructions the CPU can execute; an undecodable byte is an error, as a
// missed or invented RET would silently corrupt span timing or the text.
func (b *Binary) Returns(f Func) ([]uint64, error) {
	code, off, err := b.code(f)
	if err != nil {
		return nil, err
	}
	rets := []uint64{}
	for pc := 0; pc < len(code); {
		n, ret, err := binDecode(code[pc:])
		if err != nil {
			k := min(len(code)-pc, 15)
			return nil, fmt.Errorf("probes: %s: %s: cannot decode instruction at %#x (+%#x, bytes % x): %w",
				b.Path, f.Name, f.Entry+uint64(pc), pc, code[pc:pc+k], err)
		}
		if ret {
			rets = append(rets, off+uint64(pc))
		}
		pc += n
	}
	return rets, nil
}

// code reads f's machine code and returns it with its file offset.
func (b *Binary) code(f Func) ([]byte, uint64, error) {
	if b.file == nil {
		return nil, 0, fmt.Errorf("probes: %s: binary is closed", b.Path)
	}
	if f.End <= f.Entry {
		return nil, 0, fmt.Errorf("probes: %s: function %s has empty range [%#x,%#x)", b.Path, f.Name, f.Entry, f.End)
	}
	seg, ok := b.segment(f.Entry)
	if !ok || seg.Flags&elf.PF_X == 0 || f.End > seg.Vaddr+seg.Filesz {
		return nil, 0, fmt.Errorf("probes: %s: function %s range [%#x,%#x) is not inside an executable segment", b.Path, f.Name, f.Entry, f.End)
	}
	off := f.Entry - seg.Vaddr + seg.Off
	code := make([]byte, f.End-f.Entry)
	if _, err := b.file.ReadAt(code, int64(off)); err != nil {
		return nil, 0, fmt.Errorf("probes: %s: reading code of %s: %w", b.Path, f.Name, err)
	}
	return code, off, nil
}

// binDecode returns the length of the instruction at the start of code and
// whether it is a near RET (C3, or C2 imm16).
//
// x86asm does not understand most VEX and EVEX encodings and, worse, does
// not always reject them: it reads C5 ED 74 D9 (VPCMPEQB) as a 4-byte JE and
// C5 FD D7 as a 3-byte XLAT, which desynchronises the sweep and can invent
// or hide a RET. Go's assembly (bytealg, crypto, the AVX-512 GC scanner)
// and GOAMD64=v3 compiled code use VEX/EVEX, so those are measured here
// from their fixed layout; nothing else is left to x86asm.
func binDecode(code []byte) (n int, ret bool, err error) {
	i, vexInvalid := 0, false
prefixes:
	for ; i < len(code) && i < 14; i++ {
		switch c := code[i]; {
		case c == 0x26 || c == 0x2e || c == 0x36 || c == 0x3e || c == 0x64 || c == 0x65 || c == 0x67:
		case c == 0x66 || c == 0xf0 || c == 0xf2 || c == 0xf3 || c&0xf0 == 0x40:
			vexInvalid = true // VEX/EVEX after these (or REX) is #UD
		default:
			break prefixes
		}
	}
	if i < len(code) && (code[i] == 0xc4 || code[i] == 0xc5 || code[i] == 0x62) {
		// In 64-bit mode these always start VEX/EVEX (LES, LDS and BOUND
		// are invalid there).
		if vexInvalid {
			return 0, false, errors.New("VEX/EVEX escape after a 66/F0/F2/F3/REX prefix")
		}
		n, err := binVEXLen(code[i:])
		return i + n, false, err
	}
	inst, err := x86asm.Decode(code, 64)
	if err == nil && inst.Op == 0 {
		// x86asm's answer to a prefix followed by an opcode it does not
		// know: the prefix alone as a 1-byte "instruction", no error.
		err = errors.New("unrecognized instruction after prefix")
	}
	if err != nil {
		// x86asm lacks some 0F38/0F3A instructions (ADCX/ADOX in math/big
		// and bigmod). Those maps have a fixed layout: ModRM always, and an
		// imm8 exactly in 0F3A; none of them is a RET.
		j := i // past all prefixes, REX included
		if j+2 < len(code) && code[j] == 0x0f && (code[j+1] == 0x38 || code[j+1] == 0x3a) {
			n, merr := binModRMLen(code[j+3:])
			if merr != nil {
				return 0, false, merr
			}
			n += j + 3
			if code[j+1] == 0x3a {
				n++
			}
			if n > len(code) {
				return 0, false, errors.New("truncated instruction")
			}
			return n, false, nil
		}
		return 0, false, err
	}
	if inst.Len == 0 {
		return 0, false, errors.New("zero-length instruction")
	}
	return inst.Len, inst.Op == x86asm.RET, nil
}

// binModRMLen measures a ModRM byte with its SIB and displacement. 32-bit
// addressing (a 67 prefix) has the same layout in 64-bit mode.
func binModRMLen(code []byte) (int, error) {
	if len(code) < 1 {
		return 0, errors.New("truncated instruction")
	}
	mod, rm := code[0]>>6, code[0]&7
	i := 1
	if mod == 3 {
		return i, nil
	}
	if rm == 4 {
		if len(code) < 2 {
			return 0, errors.New("truncated instruction")
		}
		if mod == 0 && code[1]&7 == 5 {
			i += 4 // SIB without base: disp32
		}
		i++
	}
	switch {
	case mod == 0 && rm == 5:
		i += 4 // RIP-relative
	case mod == 1:
		i++
	case mod == 2:
		i += 4
	}
	return i, nil
}

// binVEXLen measures a VEX (C4, C5) or EVEX (62) instruction: escape and
// payload, one opcode byte, ModRM (except VZEROUPPER/VZEROALL), SIB and
// displacement as in legacy encoding, and an imm8 for map 0F3A and for the
// map-0F opcodes that take one.
func binVEXLen(code []byte) (int, error) {
	need := func(k int) error {
		if len(code) < k {
			return errors.New("truncated VEX/EVEX instruction")
		}
		return nil
	}
	var i, mmap int
	switch code[0] {
	case 0xc5:
		i, mmap = 2, 1
	case 0xc4:
		if err := need(2); err != nil {
			return 0, err
		}
		i, mmap = 3, int(code[1]&0x1f)
	case 0x62:
		if err := need(4); err != nil {
			return 0, err
		}
		if code[2]&0x04 == 0 {
			return 0, errors.New("invalid EVEX prefix")
		}
		i, mmap = 4, int(code[1]&0x07)
	}
	if mmap < 1 || mmap > 3 {
		return 0, fmt.Errorf("unsupported VEX/EVEX opcode map %d", mmap)
	}
	if err := need(i + 1); err != nil {
		return 0, err
	}
	op := code[i]
	i++
	if code[0] != 0x62 && mmap == 1 && op == 0x77 {
		return i, nil // VZEROUPPER, VZEROALL
	}
	n, err := binModRMLen(code[i:])
	if err != nil {
		return 0, err
	}
	i += n
	if mmap == 3 || (mmap == 1 && (op >= 0x70 && op <= 0x73 || op == 0xc2 || op >= 0xc4 && op <= 0xc6)) {
		i++
	}
	if err := need(i); err != nil {
		return 0, err
	}
	return i, nil
}

// ModuleVersion returns the version of module modPath linked into the
// binary: the replacement's version when it is replaced by another module
// version; else the recorded version unless it is a placeholder (v0.0.0,
// "(devel)"); else, for a k8s.io/* staging module, v0.X.Y derived from the
// Kubernetes version v1.X.Y (see KubernetesVersion). For the main module the
// main module's version is used, and for k8s.io/kubernetes as main module
// KubernetesVersion. Otherwise the error wraps ErrVersionUnknown and lists
// what was tried.
func (b *Binary) ModuleVersion(modPath string) (string, error) {
	v, err := binModuleVersion(b.bi, modPath)
	if err != nil {
		return "", fmt.Errorf("probes: %s: %w", b.Path, err)
	}
	return v, nil
}

// KubernetesVersion returns the Kubernetes release the binary was built
// from, e.g. "v1.35.4": the gitVersion that hack/lib/version.sh sets with
// -X (in -ldflags, which the build info keeps unless built with -trimpath),
// else a tagged k8s.io/kubernetes main module or dependency version.
func (b *Binary) KubernetesVersion() (string, error) {
	v, err := binKubernetesVersion(b.bi)
	if err != nil {
		return "", fmt.Errorf("probes: %s: %w", b.Path, err)
	}
	return v, nil
}

// binUsableVersion rejects the placeholders the go command records when it
// does not know a version: "(devel)" for an unversioned main module,
// v0.0.0 for Kubernetes staging modules, and the zero pseudo-version that
// `go mod` writes for replaced requirements.
func binUsableVersion(v string) bool {
	return v != "" && v != "(devel)" && v != "v0.0.0" && !strings.HasPrefix(v, "v0.0.0-00010101000000-")
}

// binModuleVersion is the version logic of ModuleVersion, apart from the
// file so it can be tested against hand-written build info.
func binModuleVersion(bi *buildinfo.BuildInfo, modPath string) (string, error) {
	if bi == nil {
		return "", fmt.Errorf("%w: %s: no build info", ErrVersionUnknown, modPath)
	}
	var tried []string
	if modPath == bi.Main.Path {
		if binUsableVersion(bi.Main.Version) {
			return bi.Main.Version, nil
		}
		tried = append(tried, fmt.Sprintf("main module version %q", bi.Main.Version))
		if modPath == "k8s.io/kubernetes" {
			v, err := binKubernetesVersion(bi)
			if err == nil {
				return v, nil
			}
			tried = append(tried, err.Error())
		}
		return "", fmt.Errorf("%w: %s: tried %s", ErrVersionUnknown, modPath, strings.Join(tried, "; "))
	}

	var m *rdebug.Module
	for _, d := range bi.Deps {
		if d.Path == modPath {
			m = d
			break
		}
	}
	if m == nil {
		return "", fmt.Errorf("%w: %s: not in the build info (main module %s)", ErrVersionUnknown, modPath, bi.Main.Path)
	}
	if m.Replace != nil {
		if binUsableVersion(m.Replace.Version) {
			return m.Replace.Version, nil
		}
		tried = append(tried, fmt.Sprintf("replacement %s has no version", m.Replace.Path))
	}
	if binUsableVersion(m.Version) {
		return m.Version, nil
	}
	tried = append(tried, fmt.Sprintf("module version %q", m.Version))

	// Kubernetes builds its staging modules from the same commit, in the
	// same tree, as k8s.io/kubernetes v1.X.Y, and tags them v0.X.Y.
	if strings.HasPrefix(modPath, "k8s.io/") {
		kv, err := binKubernetesVersion(bi)
		if err == nil {
			if sm := binKubeVersionRE.FindStringSubmatch(kv); sm != nil {
				return "v0." + sm[1], nil
			}
			err = fmt.Errorf("kubernetes version %q is not v1.X.Y", kv)
		}
		tried = append(tried, "staging version from "+err.Error())
	}
	return "", fmt.Errorf("%w: %s: tried %s", ErrVersionUnknown, modPath, strings.Join(tried, "; "))
}

var binKubeVersionRE = regexp.MustCompile(`^v1\.(\d+\.\d+.*)$`)

// The variables hack/lib/version.sh sets with -X; in-tree builds spell the
// staging packages under k8s.io/kubernetes/vendor/.
var binKubeVersionVars = []string{
	"k8s.io/component-base/version.gitVersion",
	"k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion",
	"k8s.io/client-go/pkg/version.gitVersion",
	"k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitVersion",
}

func binKubernetesVersion(bi *buildinfo.BuildInfo) (string, error) {
	if bi == nil {
		return "", fmt.Errorf("%w: kubernetes: no build info", ErrVersionUnknown)
	}
	var tried []string
	ldflags, recorded := "", false
	for _, s := range bi.Settings {
		if s.Key == "-ldflags" {
			ldflags, recorded = s.Value, true
		}
	}
	if recorded {
		xs := binLdflagsX(ldflags)
		for _, name := range binKubeVersionVars {
			// The unset default is "v0.0.0-master+$Format:%H$".
			if v := xs[name]; binUsableVersion(v) && !strings.Contains(v, "$Format") {
				return v, nil
			}
		}
		tried = append(tried, "-ldflags has no -X ...version.gitVersion")
	} else {
		// go build -trimpath drops -ldflags from the build info.
		tried = append(tried, "-ldflags not recorded (built with -trimpath?)")
	}
	if bi.Main.Path == "k8s.io/kubernetes" {
		if binUsableVersion(bi.Main.Version) {
			return bi.Main.Version, nil
		}
		tried = append(tried, fmt.Sprintf("main module k8s.io/kubernetes version %q", bi.Main.Version))
	}
	for _, d := range bi.Deps {
		if d.Path != "k8s.io/kubernetes" {
			continue
		}
		if d.Replace != nil && binUsableVersion(d.Replace.Version) {
			return d.Replace.Version, nil
		}
		if binUsableVersion(d.Version) {
			return d.Version, nil
		}
		tried = append(tried, fmt.Sprintf("dependency k8s.io/kubernetes version %q", d.Version))
	}
	if len(tried) == 1 {
		tried = append(tried, "no k8s.io/kubernetes module")
	}
	return "", fmt.Errorf("%w: kubernetes: tried %s", ErrVersionUnknown, strings.Join(tried, "; "))
}

// binLdflagsX returns the -X name=value assignments in an -ldflags string,
// split the way cmd/go splits it: on spaces, with single or double quotes
// grouping (hack/lib/version.sh quotes each -X argument).
func binLdflagsX(ldflags string) map[string]string {
	var fields []string
	var cur strings.Builder
	inField := false
	var quote byte
	for i := 0; i < len(ldflags); i++ {
		c := ldflags[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inField = c, true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inField {
				fields = append(fields, cur.String())
				cur.Reset()
				inField = false
			}
		default:
			cur.WriteByte(c)
			inField = true
		}
	}
	if inField {
		fields = append(fields, cur.String())
	}

	xs := make(map[string]string)
	for i := 0; i < len(fields); i++ {
		var arg string
		switch fl := fields[i]; {
		case fl == "-X" || fl == "--X":
			if i+1 < len(fields) {
				i++
				arg = fields[i]
			}
		case strings.HasPrefix(fl, "-X="):
			arg = fl[len("-X="):]
		case strings.HasPrefix(fl, "--X="):
			arg = fl[len("--X="):]
		}
		if name, val, ok := strings.Cut(arg, "="); ok {
			xs[name] = val
		}
	}
	return xs
}
