package probes

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	rdebug "runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test program's functions cover what probes target in real
// components: several return paths, a pointer-receiver method, a closure, a
// generic method (named by its shape instantiation) and a function that never
// returns.
var binTestFuncs = []string{
	"main.classify",
	"main.(*counter).Add",
	"main.(*Box[go.shape.int]).Swap",
	"main.makeHook.func1",
	"main.fail",
	"main.main",
}

const binTestProgram = `package main

import (
	"fmt"
	"os"

	"example.com/dep"
	"k8s.io/apiserver"
)

//go:noinline
func classify(x int) string {
	switch {
	case x < 0:
		return "neg"
	case x == 0:
		return "zero"
	case x > 1000:
		return "big"
	}
	if x%2 == 0 {
		return "even"
	}
	return "odd"
}

type counter struct{ n int }

//go:noinline
func (c *counter) Add(d int) int {
	c.n += d
	return c.n
}

type Box[T any] struct{ v T }

//go:noinline
func (b *Box[T]) Swap(v T) T {
	old := b.v
	b.v = v
	return old
}

var hook func(int) int

//go:noinline
func makeHook(k int) {
	hook = func(x int) int {
		if x > k {
			return x - k
		}
		return k - x
	}
}

//go:noinline
func fail(msg string) {
	panic("fail: " + msg)
}

func main() {
	c := &counter{}
	b := &Box[int]{}
	makeHook(len(os.Args))
	fmt.Println(classify(len(os.Args)), c.Add(2), b.Swap(3), hook(7), dep.Name(), apiserver.Name())
	if len(os.Args) > 5 {
		fail(os.Args[1])
	}
}
`

// A local dependency gives a version to check, and a fake staging module
// reproduces how Kubernetes release builds record k8s.io/* modules.
var binTestTree = map[string]string{
	"go.mod": `module example.com/kpathtest

go 1.26

require (
	example.com/dep v1.2.3
	k8s.io/apiserver v0.0.0
)

replace (
	example.com/dep => ./dep
	k8s.io/apiserver => ./staging/src/k8s.io/apiserver
)
`,
	"main.go":                             binTestProgram,
	"dep/go.mod":                          "module example.com/dep\n\ngo 1.26\n",
	"dep/dep.go":                          "package dep\n\n//go:noinline\nfunc Name() string { return \"dep\" }\n",
	"staging/src/k8s.io/apiserver/go.mod": "module k8s.io/apiserver\n\ngo 1.26\n",
	"staging/src/k8s.io/apiserver/apiserver.go": "package apiserver\n\n//go:noinline\nfunc Name() string { return \"apiserver\" }\n",
}

// -X of a variable that does not exist is ignored by the linker but still
// recorded in the build info, which is all the version logic reads.
const binTestLdflagsX = "-X k8s.io/component-base/version.gitVersion=v1.35.4"

type binTestVariant struct {
	name    string
	flags   []string
	cgo     bool
	twin    string // unstripped build with identical code, for stripped variants
	trimmed bool
	env     []string
}

func binTestVariants() []binTestVariant {
	vs := []binTestVariant{
		{name: "plain", flags: []string{"-ldflags=" + binTestLdflagsX}},
		{name: "stripped", flags: []string{"-ldflags=-s -w " + binTestLdflagsX}, twin: "plain"},
		{name: "trimpath", flags: []string{"-trimpath", "-ldflags=" + binTestLdflagsX}, trimmed: true},
		{name: "trimpath-stripped", flags: []string{"-trimpath", "-ldflags=-s -w " + binTestLdflagsX}, twin: "trimpath", trimmed: true},
		// v3 lets the compiler emit VEX-encoded BMI instructions in Go code.
		{name: "amd64v3", flags: []string{"-ldflags=" + binTestLdflagsX}, env: []string{"GOAMD64=v3"}},
	}
	// External linking puts C start-up code at the front of .text, so
	// .text's address is not runtime.text; that is the case that breaks a
	// naive pclntab reader.
	if _, err := exec.LookPath("gcc"); err == nil {
		vs = append(vs,
			binTestVariant{name: "external", cgo: true, flags: []string{"-ldflags=-linkmode=external " + binTestLdflagsX}},
			binTestVariant{name: "external-stripped", cgo: true, flags: []string{"-ldflags=-linkmode=external -s -w " + binTestLdflagsX}, twin: "external"},
		)
	}
	return vs
}

func binGoTool(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found: %v", err)
	}
	return goBin
}

func binTestEnv(cgo bool) []string {
	env := append(os.Environ(), "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-buildvcs=false", "GOPROXY=off", "GO111MODULE=on")
	if cgo {
		return append(env, "CGO_ENABLED=1")
	}
	return append(env, "CGO_ENABLED=0")
}

// binBuildTestPrograms builds every variant of the test program into dir.
func binBuildTestPrograms(t *testing.T, dir string) map[string]string {
	t.Helper()
	goBin := binGoTool(t)
	src := filepath.Join(dir, "src")
	for name, content := range binTestTree {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bins := make(map[string]string)
	for _, v := range binTestVariants() {
		out := filepath.Join(dir, "prog-"+v.name)
		args := append([]string{"build", "-o", out}, v.flags...)
		args = append(args, ".")
		cmd := exec.Command(goBin, args...)
		cmd.Dir = src
		cmd.Env = append(binTestEnv(v.cgo), v.env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			if v.cgo {
				t.Logf("skipping variant %s: go %s: %v\n%s", v.name, strings.Join(args, " "), err, b)
				continue
			}
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		bins[v.name] = out
	}
	return bins
}

// binObjdumpInst is one instruction as printed by a disassembler.
type binObjdumpInst struct {
	addr uint64
	size int
	ret  bool
	asm  string
}

// binGoObjdump runs `go tool objdump -s` with an anchored regexp and returns
// the instructions of each function it printed.
func binGoObjdump(t *testing.T, bin string, names ...string) map[string][]binObjdumpInst {
	t.Helper()
	quoted := make([]string, len(names))
	for i, n := range names {
		quoted[i] = regexp.QuoteMeta(n)
	}
	re := "^(" + strings.Join(quoted, "|") + ")$"
	cmd := exec.Command(binGoTool(t), "tool", "objdump", "-s", re, bin)
	cmd.Env = binTestEnv(false)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go tool objdump -s %q %s: %v\n%s", re, bin, err, stderr.Bytes())
	}
	res := make(map[string][]binObjdumpInst)
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "TEXT "); ok {
			cur, _, _ = strings.Cut(rest, "(SB)")
			if _, seen := res[cur]; seen {
				t.Fatalf("objdump printed %s twice", cur)
			}
			res[cur] = nil
			continue
		}
		var fields []string
		for _, f := range strings.Split(line, "\t") {
			if f = strings.TrimSpace(f); f != "" {
				fields = append(fields, f)
			}
		}
		if cur == "" || len(fields) < 4 {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimPrefix(fields[1], "0x"), 16, 64)
		if err != nil {
			t.Fatalf("objdump line %q: %v", line, err)
		}
		asm := fields[3]
		res[cur] = append(res[cur], binObjdumpInst{
			addr: addr,
			size: len(fields[2]) / 2,
			ret:  asm == "RET" || strings.HasPrefix(asm, "RET "),
			asm:  asm,
		})
	}
	return res
}

// binGNUObjdumpRets returns the RET addresses GNU objdump finds in
// [start,end), or all of the file's executable sections if end is 0. It
// works on stripped files, and its decoder shares nothing with x86asm.
func binGNUObjdumpRets(t *testing.T, bin string, start, end uint64) map[uint64]bool {
	t.Helper()
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Skipf("GNU objdump not found: %v", err)
	}
	args := []string{"-d", "-w", "--no-show-raw-insn"}
	if end != 0 {
		args = append(args, fmt.Sprintf("--start-address=%#x", start), fmt.Sprintf("--stop-address=%#x", end))
	}
	out, err := exec.Command(objdump, append(args, bin)...).Output()
	if err != nil {
		t.Fatalf("objdump %v %s: %v", args, bin, err)
	}
	rets := make(map[uint64]bool)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		addrStr, asm, ok := strings.Cut(sc.Text(), ":\t")
		if !ok {
			continue
		}
		addr, err := strconv.ParseUint(strings.TrimSpace(addrStr), 16, 64)
		if err != nil {
			continue
		}
		words := strings.Fields(asm)
		for len(words) > 1 && (words[0] == "repz" || words[0] == "rep" || words[0] == "bnd" || words[0] == "notrack") {
			words = words[1:]
		}
		if len(words) > 0 && (words[0] == "ret" || words[0] == "retq" || words[0] == "retw") {
			rets[addr] = true
		}
	}
	return rets
}

func binOpen(t *testing.T, path string) *Binary {
	t.Helper()
	b, err := OpenBinary(path)
	if err != nil {
		t.Fatalf("OpenBinary(%s): %v", path, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// binRetVAs converts Returns' file offsets back to addresses.
func binRetVAs(f Func, offs []uint64) []uint64 {
	vas := make([]uint64, len(offs))
	for i, o := range offs {
		vas[i] = f.Entry + (o - f.FileOffset)
	}
	return vas
}

func binReadVA(t *testing.T, b *Binary, va uint64, n int) []byte {
	t.Helper()
	off, err := b.FileOffset(va)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := b.file.ReadAt(buf, int64(off)); err != nil {
		t.Fatalf("reading %d bytes at %#x: %v", n, va, err)
	}
	return buf
}

func TestBinaryTestProgram(t *testing.T) {
	dir := t.TempDir()
	bins := binBuildTestPrograms(t, dir)
	goVersion, err := exec.Command(binGoTool(t), "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}

	// Ground truth from `go tool objdump`, which needs .symtab: stripped
	// variants are checked against their unstripped twin after proving the
	// code is byte-identical.
	truth := make(map[string]map[string][]binObjdumpInst)
	for _, v := range binTestVariants() {
		if bin, ok := bins[v.name]; ok && v.twin == "" {
			truth[v.name] = binGoObjdump(t, bin, binTestFuncs...)
		}
	}

	for _, v := range binTestVariants() {
		bin, ok := bins[v.name]
		if !ok {
			continue
		}
		t.Run(v.name, func(t *testing.T) {
			b := binOpen(t, bin)
			wantStripped := v.twin != ""
			if b.Stripped != wantStripped {
				t.Errorf("Stripped = %v, want %v", b.Stripped, wantStripped)
			}
			if b.GoVersion != strings.TrimSpace(string(goVersion)) {
				t.Errorf("GoVersion = %q, want %q", b.GoVersion, goVersion)
			}
			if b.MainPath != "example.com/kpathtest" {
				t.Errorf("MainPath = %q", b.MainPath)
			}

			ref, refName := b, v.name
			if v.twin != "" {
				ref, refName = binOpen(t, bins[v.twin]), v.twin
			}
			dump := truth[refName]
			for _, name := range binTestFuncs {
				f, err := b.Func(name)
				if err != nil {
					t.Errorf("Func(%q): %v", name, err)
					continue
				}
				insts := dump[name]
				if len(insts) == 0 {
					t.Errorf("%s: objdump of %s printed no instructions", name, refName)
					continue
				}
				if v.twin != "" {
					rf, err := ref.Func(name)
					if err != nil {
						t.Fatalf("twin %s: %v", refName, err)
					}
					if rf.Entry != f.Entry || rf.End != f.End {
						t.Fatalf("%s: [%#x,%#x) differs from unstripped twin's [%#x,%#x); cannot use it as ground truth", name, f.Entry, f.End, rf.Entry, rf.End)
					}
					if !bytes.Equal(binReadVA(t, b, f.Entry, int(f.End-f.Entry)), binReadVA(t, ref, f.Entry, int(f.End-f.Entry))) {
						t.Fatalf("%s: code differs from unstripped twin's", name)
					}
				}

				if f.Entry != insts[0].addr {
					t.Errorf("%s: Entry = %#x, objdump starts at %#x", name, f.Entry, insts[0].addr)
				}
				// pclntab's End is the next function's entry; objdump stops
				// at the ELF symbol size. The difference must be INT3 padding.
				last := insts[len(insts)-1]
				codeEnd := last.addr + uint64(last.size)
				if f.End < codeEnd || f.End-codeEnd >= 64 {
					t.Errorf("%s: End = %#x, objdump's code ends at %#x", name, f.End, codeEnd)
				} else if pad := binReadVA(t, b, codeEnd, int(f.End-codeEnd)); len(bytes.Trim(pad, "\xcc")) != 0 {
					t.Errorf("%s: bytes between code end %#x and End %#x are not INT3 padding: % x", name, codeEnd, f.End, pad)
				}
				if off, err := b.FileOffset(f.Entry); err != nil || off != f.FileOffset {
					t.Errorf("%s: FileOffset(Entry) = %#x, %v; Func.FileOffset = %#x", name, off, err, f.FileOffset)
				}

				rets, err := b.Returns(f)
				if err != nil {
					t.Errorf("Returns(%s): %v", name, err)
					continue
				}
				var want []uint64
				for _, in := range insts {
					if in.ret {
						off, err := b.FileOffset(in.addr)
						if err != nil {
							t.Fatal(err)
						}
						want = append(want, off)
					}
				}
				if rets == nil || !slices.Equal(rets, want) {
					t.Errorf("%s: Returns = %#x, objdump RETs at file offsets %#x", name, rets, want)
				}
				// The entry probe: the PUSHQ BP that follows objdump's
				// stack check (CMPQ …, 0x10(R14); JBE), when there is one.
				site, atPush, err := b.EntrySite(f)
				var wantSite uint64
				for i := 0; i+1 < len(insts) && i < 3; i++ {
					if strings.HasPrefix(insts[i].asm, "CMPQ ") && strings.HasSuffix(insts[i].asm, ", 0x10(R14)") &&
						strings.HasPrefix(insts[i+1].asm, "JBE ") && i+2 < len(insts) && insts[i+2].asm == "PUSHQ BP" {
						wantSite, _ = b.FileOffset(insts[i+2].addr)
					}
				}
				switch {
				case err != nil:
					t.Errorf("EntrySite(%s): %v", name, err)
				case wantSite != 0 && (!atPush || site != wantSite):
					t.Errorf("%s: EntrySite = %#x (at push %v), objdump's PUSHQ BP after the stack check is at %#x", name, site, atPush, wantSite)
				case wantSite == 0 && (atPush || site != f.FileOffset):
					t.Errorf("%s: EntrySite = %#x (at push %v), but objdump shows no stack check then PUSHQ BP: want the entry %#x", name, site, atPush, f.FileOffset)
				}
				if name == "main.main" && !atPush {
					t.Errorf("%s: a function with a frame and a stack check got no push site", name)
				}
				switch name {
				case "main.fail":
					if len(rets) != 0 {
						t.Errorf("%s never returns, but Returns = %#x", name, rets)
					}
				case "main.classify":
					if len(rets) < 3 {
						t.Errorf("%s: want several RETs, got %#x", name, rets)
					}
				}
			}

			// Every main.* function must decode.
			n := 0
			for name := range b.funcs {
				if !strings.HasPrefix(name, "main.") {
					continue
				}
				n++
				f, err := b.Func(name)
				if err == nil {
					_, err = b.Returns(f)
				}
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
			if n < len(binTestFuncs) {
				t.Errorf("only %d main.* functions indexed", n)
			}

			if _, err := b.Func("main.noSuchFunction"); !errors.Is(err, ErrSymbolNotFound) ||
				!strings.Contains(err.Error(), "main.noSuchFunction") || !strings.Contains(err.Error(), bin) {
				t.Errorf("Func(missing) error = %v, want ErrSymbolNotFound naming symbol and %s", err, bin)
			}

			// Module versions.
			if m := b.Modules["k8s.io/apiserver"]; m.Version != "v0.0.0" || m.Replace != "./staging/src/k8s.io/apiserver" {
				t.Errorf("Modules[k8s.io/apiserver] = %+v", m)
			}
			if v, err := b.ModuleVersion("example.com/dep"); err != nil || v != "v1.2.3" {
				t.Errorf("ModuleVersion(example.com/dep) = %q, %v; want v1.2.3", v, err)
			}
			if _, err := b.ModuleVersion("example.com/kpathtest"); !errors.Is(err, ErrVersionUnknown) {
				t.Errorf("ModuleVersion(main module, (devel)) error = %v, want ErrVersionUnknown", err)
			}
			kv, kerr := b.KubernetesVersion()
			sv, serr := b.ModuleVersion("k8s.io/apiserver")
			if v.trimmed {
				// -trimpath keeps -ldflags out of the build info, so the
				// staging version is not knowable.
				if !errors.Is(kerr, ErrVersionUnknown) || !errors.Is(serr, ErrVersionUnknown) ||
					!strings.Contains(serr.Error(), "k8s.io/apiserver") || !strings.Contains(serr.Error(), bin) {
					t.Errorf("trimpath: KubernetesVersion = %q, %v; ModuleVersion(k8s.io/apiserver) = %q, %v; want ErrVersionUnknown naming module and binary", kv, kerr, sv, serr)
				}
			} else {
				if kv != "v1.35.4" || kerr != nil {
					t.Errorf("KubernetesVersion = %q, %v; want v1.35.4", kv, kerr)
				}
				if sv != "v0.35.4" || serr != nil {
					t.Errorf("ModuleVersion(k8s.io/apiserver) = %q, %v; want v0.35.4", sv, serr)
				}
			}
		})
	}

	// Old PIE and externally linked builds have no .gopclntab section; hide
	// it to exercise the runtime.pclntab symbol (unstripped) and the header
	// scan plus moduledata lookup of runtime.text (stripped).
	for _, name := range []string{"plain", "stripped", "external", "external-stripped"} {
		bin, ok := bins[name]
		if !ok {
			continue
		}
		t.Run("no-gopclntab-section/"+name, func(t *testing.T) {
			data, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			ef, err := elf.NewFile(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			shstr := ef.Section(".shstrtab")
			i := bytes.Index(data[shstr.Offset:shstr.Offset+shstr.Size], []byte("\x00.gopclntab\x00"))
			if i < 0 {
				t.Fatal("no .gopclntab in .shstrtab")
			}
			copy(data[int(shstr.Offset)+i:], "\x00.rodata\x00\x00\x00\x00")
			hidden := filepath.Join(dir, "hidden-"+name)
			if err := os.WriteFile(hidden, data, 0o755); err != nil {
				t.Fatal(err)
			}
			orig, b := binOpen(t, bin), binOpen(t, hidden)
			if b.textStart != orig.textStart || len(b.funcs) != len(orig.funcs) {
				t.Fatalf("text %#x, %d funcs; with .gopclntab: %#x, %d", b.textStart, len(b.funcs), orig.textStart, len(orig.funcs))
			}
			for _, fname := range binTestFuncs {
				f1, err1 := orig.Func(fname)
				f2, err2 := b.Func(fname)
				if err1 != nil || err2 != nil || f1 != f2 {
					t.Errorf("%s: %+v, %v; with .gopclntab: %+v, %v", fname, f2, err2, f1, err1)
				}
			}
		})
	}

	// An independent decoder over every function, including the runtime's
	// AVX2/AVX-512 assembly that x86asm cannot read on its own.
	for _, name := range []string{"plain", "external", "amd64v3"} {
		bin, ok := bins[name]
		if !ok {
			continue
		}
		t.Run("all-funcs-vs-gnu-objdump/"+name, func(t *testing.T) {
			b := binOpen(t, bin)
			gnu := binGNUObjdumpRets(t, bin, 0, 0)
			checked := 0
			for fname := range b.funcs {
				f, err := b.Func(fname)
				if err != nil {
					t.Errorf("Func(%s): %v", fname, err)
					continue
				}
				offs, err := b.Returns(f)
				if err != nil {
					t.Errorf("Returns(%s): %v", fname, err)
					continue
				}
				var want []uint64
				for a := range gnu {
					if f.Entry <= a && a < f.End {
						want = append(want, a)
					}
				}
				slices.Sort(want)
				if got := binRetVAs(f, offs); !slices.Equal(got, want) {
					t.Errorf("%s [%#x,%#x): RETs %#x, GNU objdump %#x", fname, f.Entry, f.End, got, want)
				}
				checked++
			}
			t.Logf("%d functions agree with GNU objdump", checked)
		})
	}
}

// TestBinarySelf checks the pclntab reading against the runtime's own view
// of the running test binary.
func TestBinarySelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	b := binOpen(t, exe)
	name := "github.com/kpath/kpath/probes.OpenBinary"
	f, err := b.Func(name)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if ef.Type == elf.ET_EXEC {
		// OpenBinary's func value holds its code address.
		if pc := binFuncPC(OpenBinary); pc != f.Entry {
			t.Errorf("%s: Entry %#x, runtime says %#x", name, f.Entry, pc)
		}
	}
	rets, err := b.Returns(f)
	if err != nil || len(rets) == 0 {
		t.Errorf("Returns(%s) = %#x, %v", name, rets, err)
	}
	if bi, ok := rdebug.ReadBuildInfo(); ok && b.GoVersion != bi.GoVersion {
		t.Errorf("GoVersion = %q, runtime says %q", b.GoVersion, bi.GoVersion)
	}
}

func binFuncPC(fn any) uint64 {
	return uint64(reflect.ValueOf(fn).Pointer())
}

func TestBinaryBadInput(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	goBin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mustFail := func(t *testing.T, path string) error {
		t.Helper()
		b, err := OpenBinary(path)
		if err == nil {
			b.Close()
			t.Fatalf("OpenBinary(%s) succeeded", path)
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("error does not name the path %s: %v", path, err)
		}
		t.Logf("%v", err)
		return err
	}

	t.Run("text", func(t *testing.T) {
		err := mustFail(t, write("script.sh", []byte("#!/bin/sh\necho hi\n")))
		if !strings.Contains(err.Error(), "not an ELF") {
			t.Errorf("want a not-ELF error, got %v", err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		mustFail(t, write("empty", nil))
	})
	t.Run("directory", func(t *testing.T) {
		mustFail(t, dir)
	})
	t.Run("C-binary", func(t *testing.T) {
		var cbin string
		for _, p := range []string{"/bin/true", "/usr/bin/true", "/bin/ls", "/usr/bin/env"} {
			if b, err := os.ReadFile(p); err == nil && bytes.HasPrefix(b, []byte(elf.ELFMAG)) && !bytes.Contains(b, []byte("\xff Go buildinf:")) {
				cbin = p
				break
			}
		}
		if cbin == "" {
			t.Skip("no non-Go ELF executable found")
		}
		if err := mustFail(t, cbin); !errors.Is(err, ErrNotGo) {
			t.Errorf("want ErrNotGo, got %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for _, n := range []int{3, 16, 64, 4096, len(goBin) / 3, len(goBin) / 2, len(goBin) - 1} {
			mustFail(t, write(fmt.Sprintf("trunc-%d", n), goBin[:n]))
		}
	})
	t.Run("zeroed-pclntab", func(t *testing.T) {
		ef, err := elf.NewFile(bytes.NewReader(goBin))
		if err != nil {
			t.Fatal(err)
		}
		s := ef.Section(".gopclntab")
		if s == nil {
			t.Skip("test binary has no .gopclntab")
		}
		bad := slices.Clone(goBin)
		clear(bad[s.Offset : s.Offset+min(s.Size, 4096)])
		mustFail(t, write("zeroed-pclntab", bad))
	})
	t.Run("pclntab-past-the-end", func(t *testing.T) {
		// A section header claiming a terabyte: an error, not an attempt to
		// allocate it.
		ef, err := elf.NewFile(bytes.NewReader(goBin))
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(ef.Sections, func(s *elf.Section) bool { return s.Name == ".gopclntab" })
		if i < 0 {
			t.Skip("test binary has no .gopclntab")
		}
		bad := slices.Clone(goBin)
		shoff := binary.LittleEndian.Uint64(bad[0x28:])
		shentsize := uint64(binary.LittleEndian.Uint16(bad[0x3a:]))
		binary.LittleEndian.PutUint64(bad[shoff+uint64(i)*shentsize+32:], 1<<40) // sh_size
		err = mustFail(t, write("pclntab-past-the-end", bad))
		if !strings.Contains(err.Error(), ".gopclntab") || !strings.Contains(err.Error(), "past the end") {
			t.Errorf("want an error naming .gopclntab running past the end of the file, got %v", err)
		}
	})
	t.Run("arm64", func(t *testing.T) {
		bad := slices.Clone(goBin)
		bad[18], bad[19] = byte(elf.EM_AARCH64), 0
		err := mustFail(t, write("arm64", bad))
		if !strings.Contains(err.Error(), "x86-64") {
			t.Errorf("want an architecture error, got %v", err)
		}
	})
	t.Run("missing-symbol", func(t *testing.T) {
		b := binOpen(t, exe)
		_, err := b.Func("go.etcd.io/etcd/server/v3/storage/mvcc.(*storeTxnWrite).put")
		if !errors.Is(err, ErrSymbolNotFound) || !strings.Contains(err.Error(), "(*storeTxnWrite).put") || !strings.Contains(err.Error(), exe) {
			t.Errorf("want ErrSymbolNotFound naming symbol and %s, got %v", exe, err)
		}
	})
	t.Run("nonexistent", func(t *testing.T) {
		p := filepath.Join(dir, "no", "such", "binary")
		if err := mustFail(t, p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("want fs.ErrNotExist, got %v", err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			// root reads through permissions; a process that is gone is
			// what the tracer will meet instead.
			if err := mustFail(t, "/proc/999999999/exe"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("want fs.ErrNotExist, got %v", err)
			}
			return
		}
		locked := filepath.Join(dir, "locked")
		p := filepath.Join(locked, "prog")
		if err := os.MkdirAll(locked, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, goBin, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(locked, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(locked, 0o755) })
		if err := mustFail(t, p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("want fs.ErrPermission, got %v", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		b, err := OpenBinary(exe)
		if err != nil {
			t.Fatal(err)
		}
		f, err := b.Func("github.com/kpath/kpath/probes.OpenBinary")
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		if _, err := b.Returns(f); err == nil {
			t.Error("Returns after Close succeeded")
		}
	})
}

func TestReturnsDecode(t *testing.T) {
	// Encodings x86asm gets wrong or rejects (VEX/EVEX from the runtime's
	// assembly, ADX from math/big), followed by a RET: a desynchronised
	// sweep would miss it or report one inside them.
	cases := []struct {
		name string
		code []byte
		n    int
	}{
		{"VPCMPEQB ymm (C5)", []byte{0xc5, 0xed, 0x74, 0xd9}, 4},
		{"VPMOVMSKB (C5)", []byte{0xc5, 0xfd, 0xd7, 0xd3}, 4},
		{"VPTEST (C4 map 0F38)", []byte{0xc4, 0xe2, 0x7d, 0x17, 0xdb}, 5},
		{"VZEROUPPER", []byte{0xc5, 0xf8, 0x77}, 3},
		{"VMOVDQU [rdi+disp8]", []byte{0xc5, 0xfe, 0x6f, 0x57, 0x20}, 5},
		{"VPSHUFD imm8 (map 0F)", []byte{0xc5, 0xfd, 0x70, 0xc0, 0x1b}, 5},
		{"VPALIGNR imm8 (map 0F3A)", []byte{0xc4, 0xe3, 0x7d, 0x0f, 0xc1, 0x08}, 6},
		{"VMOVDQU64 zmm [rsi+disp32] (EVEX)", []byte{0x62, 0xf1, 0xfe, 0x48, 0x6f, 0x86, 0x00, 0x01, 0x00, 0x00}, 10},
		{"VPTERNLOGD imm8 (EVEX map 0F3A)", []byte{0x62, 0xf3, 0x75, 0x48, 0x25, 0xc2, 0x96}, 7},
		{"SHLX (C4 map 0F38, SIB)", []byte{0xc4, 0xe2, 0xf9, 0xf7, 0x04, 0x24}, 6},
		{"ADCX r64, r64 (66 REX 0F38)", []byte{0x66, 0x4c, 0x0f, 0x38, 0xf6, 0xc3}, 6},
		{"ADOX r64, [rax] (F3 REX 0F38)", []byte{0xf3, 0x4c, 0x0f, 0x38, 0xf6, 0x00}, 6},
		{"ADOX r64, [r8+disp32] (0F38)", []byte{0xf3, 0x4d, 0x0f, 0x38, 0xf6, 0x80, 0x00, 0x01, 0x00, 0x00}, 10},
		{"ret", []byte{0xc3}, 1},
		{"ret imm16", []byte{0xc2, 0x08, 0x00}, 3},
	}
	for _, c := range cases {
		n, ret, err := binDecode(append(slices.Clone(c.code), 0xc3))
		if err != nil || n != c.n || ret != (c.code[0] == 0xc2 || c.code[0] == 0xc3) {
			t.Errorf("%s: binDecode = %d, %v, %v; want %d", c.name, n, ret, err, c.n)
		}
	}
	for _, bad := range [][]byte{
		{0x66, 0xc5, 0xf8, 0x77},       // VEX after 66 is #UD
		{0xc4, 0xe5, 0x7d, 0x17, 0xdb}, // VEX map 5 does not exist
		{0x62, 0xf1, 0xfe, 0x48},       // truncated
		{0x66, 0x0f, 0xff, 0xff},       // x86asm: lone "DATA16" prefix, no error
	} {
		if n, _, err := binDecode(bad); err == nil {
			t.Errorf("binDecode(% x) = %d, want error", bad, n)
		}
	}
}

func TestModuleVersionDerivation(t *testing.T) {
	ldflags := func(v string) rdebug.BuildSetting { return rdebug.BuildSetting{Key: "-ldflags", Value: v} }
	staging := &rdebug.Module{Path: "k8s.io/apiserver", Version: "v0.0.0", Replace: &rdebug.Module{Path: "./staging/src/k8s.io/apiserver", Version: "(devel)"}}
	kubeMain := rdebug.Module{Path: "k8s.io/kubernetes", Version: "(devel)"}
	cases := []struct {
		name    string
		bi      buildinfo.BuildInfo
		mod     string
		want    string
		wantErr string // substring; implies ErrVersionUnknown
	}{
		{
			name: "replace with version",
			bi: buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{
				{Path: "k8s.io/apiserver", Version: "v0.35.4", Replace: &rdebug.Module{Path: "k8s.io/apiserver", Version: "v0.35.4"}},
			}},
			mod: "k8s.io/apiserver", want: "v0.35.4",
		},
		{
			name: "replace by a fork",
			bi: buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{
				{Path: "go.etcd.io/etcd/server/v3", Version: "v3.6.0", Replace: &rdebug.Module{Path: "example.com/fork/server/v3", Version: "v3.6.5"}},
			}},
			mod: "go.etcd.io/etcd/server/v3", want: "v3.6.5",
		},
		{
			name: "plain dependency",
			bi:   buildinfo.BuildInfo{Main: rdebug.Module{Path: "go.etcd.io/etcd/v3"}, Deps: []*rdebug.Module{{Path: "go.etcd.io/etcd/server/v3", Version: "v3.6.5"}}},
			mod:  "go.etcd.io/etcd/server/v3", want: "v3.6.5",
		},
		{
			name: "staging v0.0.0 with vendor-spelled ldflags",
			bi: buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{staging}, Settings: []rdebug.BuildSetting{
				ldflags("-s -w -X 'k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.gitVersion=v1.35.4' -X 'k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitVersion=v1.35.4' -X 'k8s.io/kubernetes/vendor/k8s.io/component-base/version.gitMajor=1'"),
			}},
			mod: "k8s.io/apiserver", want: "v0.35.4",
		},
		{
			name: "staging v0.0.0 with component-base ldflags",
			bi:   buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{staging}, Settings: []rdebug.BuildSetting{ldflags("-X k8s.io/component-base/version.gitVersion=v1.35.4")}},
			mod:  "k8s.io/apiserver", want: "v0.35.4",
		},
		{
			name: "staging v0.0.0 with client-go -X= ldflags",
			bi:   buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{staging}, Settings: []rdebug.BuildSetting{ldflags(`-X="k8s.io/client-go/pkg/version.gitVersion=v1.36.0-rc.1"`)}},
			mod:  "k8s.io/apiserver", want: "v0.36.0-rc.1",
		},
		{
			name: "staging with tagged main module",
			bi:   buildinfo.BuildInfo{Main: rdebug.Module{Path: "k8s.io/kubernetes", Version: "v1.34.2"}, Deps: []*rdebug.Module{staging}},
			mod:  "k8s.io/apiserver", want: "v0.34.2",
		},
		{
			name: "devel main module is kubernetes",
			bi:   buildinfo.BuildInfo{Main: kubeMain, Settings: []rdebug.BuildSetting{ldflags("-X k8s.io/component-base/version.gitVersion=v1.35.4")}},
			mod:  "k8s.io/kubernetes", want: "v1.35.4",
		},
		{
			name: "tagged main module",
			bi:   buildinfo.BuildInfo{Main: rdebug.Module{Path: "go.etcd.io/etcd/server/v3", Version: "v3.6.5"}},
			mod:  "go.etcd.io/etcd/server/v3", want: "v3.6.5",
		},
		{
			name:    "devel main module",
			bi:      buildinfo.BuildInfo{Main: rdebug.Module{Path: "example.com/tool", Version: "(devel)"}},
			mod:     "example.com/tool",
			wantErr: `main module version "(devel)"`,
		},
		{
			name:    "staging without ldflags (trimpath)",
			bi:      buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{staging}},
			mod:     "k8s.io/apiserver",
			wantErr: "-ldflags not recorded",
		},
		{
			name: "staging with unset version placeholder",
			bi: buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{staging}, Settings: []rdebug.BuildSetting{
				ldflags("-X 'k8s.io/component-base/version.gitVersion=v0.0.0-master+$Format:%H$'"),
			}},
			mod:     "k8s.io/apiserver",
			wantErr: "no -X",
		},
		{
			name:    "module not linked in",
			bi:      buildinfo.BuildInfo{Main: kubeMain},
			mod:     "go.etcd.io/etcd/server/v3",
			wantErr: "not in the build info",
		},
		{
			name:    "zero pseudo-version, non-k8s",
			bi:      buildinfo.BuildInfo{Main: kubeMain, Deps: []*rdebug.Module{{Path: "example.com/x", Version: "v0.0.0-00010101000000-000000000000", Replace: &rdebug.Module{Path: "../x", Version: "(devel)"}}}},
			mod:     "example.com/x",
			wantErr: "replacement ../x has no version",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := binModuleVersion(&c.bi, c.mod)
			if c.wantErr != "" {
				if !errors.Is(err, ErrVersionUnknown) || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), c.mod) {
					t.Errorf("got %q, %v; want ErrVersionUnknown mentioning %q and %q", got, err, c.mod, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}

	// The method adds the binary's path.
	b := &Binary{Path: "/proc/1/exe", bi: &buildinfo.BuildInfo{Main: kubeMain}}
	if _, err := b.ModuleVersion("k8s.io/apiserver"); !errors.Is(err, ErrVersionUnknown) || !strings.Contains(err.Error(), "/proc/1/exe") {
		t.Errorf("ModuleVersion error %v does not name the binary", err)
	}
	if _, err := b.KubernetesVersion(); !errors.Is(err, ErrVersionUnknown) || !strings.Contains(err.Error(), "/proc/1/exe") {
		t.Errorf("KubernetesVersion error %v does not name the binary", err)
	}
}

// TestBinaryLab resolves the catalogue's symbols in the lab's real
// kube-apiserver and etcd builds, when they have been built.
func TestBinaryLab(t *testing.T) {
	home, _ := os.UserHomeDir()
	targets := map[string][]string{
		"kube-apiserver": {
			"go.etcd.io/etcd/client/v3/kubernetes.Client.OptimisticPut",
			"k8s.io/apiserver/pkg/endpoints/handlers.CreateResource.createHandler.func1",
		},
		"etcd": {
			"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Txn",
			"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Put", // in every release (wal moved in v3.6)
		},
	}
	found := 0
	for _, comp := range []string{"kube-apiserver", "etcd"} {
		paths, _ := filepath.Glob(filepath.Join(home, ".cache/kpath/bin/*/*", comp))
		for _, p := range paths {
			found++
			t.Run(strings.TrimPrefix(p, home+"/"), func(t *testing.T) {
				start := time.Now()
				b := binOpen(t, p)
				t.Logf("OpenBinary: %v, %d functions, stripped=%v, %s", time.Since(start), len(b.funcs), b.Stripped, b.GoVersion)
				for _, mod := range []string{"k8s.io/apiserver", "go.etcd.io/etcd/server/v3"} {
					v, err := b.ModuleVersion(mod)
					t.Logf("ModuleVersion(%s) = %q, %v", mod, v, err)
				}
				kv, err := b.KubernetesVersion()
				t.Logf("KubernetesVersion() = %q, %v", kv, err)

				var dump map[string][]binObjdumpInst
				if !b.Stripped {
					dump = binGoObjdump(t, p, targets[comp]...)
				}
				for _, name := range targets[comp] {
					f, err := b.Func(name)
					if err != nil {
						t.Errorf("Func(%s): %v", name, err)
						continue
					}
					offs, err := b.Returns(f)
					if err != nil {
						t.Errorf("Returns(%s): %v", name, err)
						continue
					}
					got := binRetVAs(f, offs)
					var want []uint64
					if dump != nil {
						insts := dump[name]
						if len(insts) == 0 || insts[0].addr != f.Entry {
							t.Errorf("%s: Entry %#x, objdump %v", name, f.Entry, insts[:min(1, len(insts))])
						}
						for _, in := range insts {
							if in.ret {
								want = append(want, in.addr)
							}
						}
					} else {
						// go tool objdump needs .symtab; GNU objdump does not.
						for a := range binGNUObjdumpRets(t, p, f.Entry, f.End) {
							want = append(want, a)
						}
						slices.Sort(want)
					}
					if !slices.Equal(got, want) {
						t.Errorf("%s: RETs %#x, objdump %#x", name, got, want)
					}
					t.Logf("%s: entry %#x (file %#x), %d bytes, RETs at file offsets %#x", name, f.Entry, f.FileOffset, f.End-f.Entry, offs)
				}
			})
		}
	}
	if found == 0 {
		t.Skipf("no lab binaries under %s/.cache/kpath/bin/*/*/{kube-apiserver,etcd}", home)
	}
}

// A "{n}" name finds the one closure the compiler numbered so, and says
// which when there is not exactly one.
func TestNumberedClosureNames(t *testing.T) {
	b := &Binary{Path: "x", funcs: map[string]binFuncRange{
		"p.(*h).serve.Create.func9": {}, "p.(*h).serve.Create.func9.1": {}, "p.(*h).serve.Create.func12x": {},
		"p.(*h).serve.Update.func3": {}, "p.(*h).serve.Update.func4": {},
	}}
	if got, err := b.numbered("p.(*h).serve.Create.func{n}"); err != nil || got != "p.(*h).serve.Create.func9" {
		t.Errorf("got %q, %v; want the one numbered closure", got, err)
	}
	if _, err := b.numbered("p.(*h).serve.Update.func{n}"); err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("two matches: %v, want ambiguous", err)
	}
	if _, err := b.numbered("p.(*h).serve.Delete.func{n}"); !errors.Is(err, ErrSymbolNotFound) {
		t.Errorf("no match: %v, want ErrSymbolNotFound", err)
	}
}
