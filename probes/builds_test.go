package probes

import (
	"bytes"
	"compress/flate"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The test program built the ways Go programs reach nodes (issue 10, R5):
// position-independent, with cgo, with DWARF, by each Go release the
// goroutine layouts name, and by releases and packers kpath cannot read.
// Each build kpath can read is traced and read exactly as the default build
// (checkCaptures); each it cannot gets an error naming the process or file
// and the reason, and the tracer goes on with the rest.

// Toolchains the go command fetches from the module proxy
// (golang.org/toolchain), the newest patch of each release.
const (
	go124 = "go1.24.13"
	go125 = "go1.25.9"
	go117 = "go1.17.13" // before the goroutine layouts kpath knows
)

// targetBuild is one way to build testdata/target.
type targetBuild struct {
	name string
	env  []string // GOTOOLCHAIN, CGO_ENABLED, GOARCH
	args []string // go build flags
}

// buildTargetAs builds testdata/target as b into a directory of its own,
// with a go.mod old enough for every toolchain here.
func buildTargetAs(t *testing.T, b targetBuild) string {
	t.Helper()
	src := t.TempDir()
	for _, f := range []string{"main.go", "cgo.go"} {
		data, err := os.ReadFile(filepath.Join("testdata", "target", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module kpathtarget\n\ngo 1.17\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "target-"+b.name)
	cmd := exec.Command("go", append(append([]string{"build", "-trimpath", "-o", out}, b.args...), ".")...)
	cmd.Dir = src
	// GOFLAGS (here from go env -w) may hold flags older toolchains do not
	// know (-buildvcs): one every toolchain knows replaces it.
	cmd.Env = append(append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "CGO_ENABLED=0"), b.env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the target %s (%v %v): %v\n%s", b.name, b.env, b.args, err, msg)
	}
	return out
}

func TestBuildsOfEveryKind(t *testing.T) {
	needBPF(t)
	const n = 200
	for _, b := range []targetBuild{
		{name: "pie", args: []string{"-buildmode=pie", "-ldflags=-s -w"}},
		{name: "cgo", env: []string{"CGO_ENABLED=1"}, args: []string{"-tags=kpathcgo", "-ldflags=-s -w"}},
		{name: "cgo-pie", env: []string{"CGO_ENABLED=1"}, args: []string{"-tags=kpathcgo", "-buildmode=pie"}},
		{name: "dwarf"},
		{name: go124, env: []string{"GOTOOLCHAIN=" + go124}, args: []string{"-ldflags=-s -w"}},
		{name: go125, env: []string{"GOTOOLCHAIN=" + go125}, args: []string{"-ldflags=-s -w"}},
	} {
		t.Run(b.name, func(t *testing.T) {
			path := buildTargetAs(t, b)
			bin, err := OpenBinary(path)
			if err != nil {
				t.Fatal(err)
			}
			goVersion, stripped := bin.GoVersion, bin.Stripped
			bin.Close()
			tr, p, events := traceTargetAt(t, path, testRows, n, 2*n)
			checkCaptures(t, tr, p, events, n)
			t.Logf("%s (%s, stripped %v): %d events read as the default build's", b.name, goVersion, stripped, len(events))
		})
	}

	t.Run(go117, func(t *testing.T) {
		path := buildTargetAs(t, targetBuild{name: go117, env: []string{"GOTOOLCHAIN=" + go117}})
		tr := newTracer(t, Options{Rows: testRows})
		tg := startTarget(t, path)
		pid := tg.cmd.Process.Pid
		_, err := tr.Attach(pid, testComponent)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprint(pid)) || !strings.Contains(err.Error(), "runtime.g layout of go1.17.13 is not known") || !strings.Contains(err.Error(), "older than every Kubernetes and etcd release kpath covers") {
			t.Fatalf("attach to a go1.17 build: %v; want a refusal naming the pid and the Go release", err)
		}
		t.Logf("%v", err)
		// The tracer goes on with the rest.
		tg2 := startTarget(t, buildTarget(t))
		if p, err := tr.Attach(tg2.cmd.Process.Pid, testComponent); err != nil || p.Attached() != len(testRows) {
			t.Fatalf("attach after the refusal: %v", err)
		}
	})

	t.Run("arm64", func(t *testing.T) {
		path := buildTargetAs(t, targetBuild{name: "arm64", env: []string{"GOARCH=arm64"}, args: []string{"-ldflags=-s -w"}})
		_, err := OpenBinary(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "only x86-64 is supported") {
			t.Fatalf("open an arm64 build: %v; want an architecture error naming the file", err)
		}
		t.Logf("%v", err)
	})

	// Debian no longer ships UPX: upxLike makes what a UPX-packed Go
	// program is to a reader of the file.
	t.Run("upx", func(t *testing.T) {
		path := upxLike(t, buildTarget(t))
		_, err := OpenBinary(path)
		if !errors.Is(err, ErrPacked) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "upx -d") {
			t.Fatalf("open a UPX-packed build: %v; want ErrPacked naming the file and the fix", err)
		}
		t.Logf("%v", err)
	})
}

// upxLike writes what UPX leaves of an executable: its ELF header and
// program headers without section headers, UPX's "UPX!" header after them,
// and the rest of the file compressed.
func upxLike(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	ef.Close()
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(data[0x20:]), le.Uint16(data[0x36:]), le.Uint16(data[0x38:])
	head := bytes.Clone(data[:phoff+uint64(phentsize)*uint64(phnum)])
	le.PutUint64(head[0x28:], 0) // e_shoff
	le.PutUint16(head[0x3c:], 0) // e_shnum
	le.PutUint16(head[0x3e:], 0) // e_shstrndx
	var out bytes.Buffer
	out.Write(head)
	out.WriteString("UPX!")
	w, _ := flate.NewWriter(&out, flate.BestSpeed)
	w.Write(data[len(head):])
	w.Close()
	p := filepath.Join(t.TempDir(), "target-upx")
	if err := os.WriteFile(p, out.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}
