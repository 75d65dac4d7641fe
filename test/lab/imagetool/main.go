// Command imagetool writes single-binary container images as OCI image-layout
// tarballs, without a registry or a container daemon. The kpath lab imports them
// with `ctr -n k8s.io images import FILE` and runs them with imagePullPolicy: Never.
//
//	imagetool build --binary PATH --ref REF --out FILE [options]
//
// The binary must be statically linked (the image has no libc) unless
// --allow-dynamic is given. It is stored at /<basename> (or --path) and is the
// default entrypoint. Layers and configs use a fixed timestamp, so the same
// inputs always give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is used for every timestamp so builds are reproducible.
var epoch = time.Unix(0, 0).UTC()

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func usage() {
	fmt.Fprint(os.Stderr, `usage: imagetool build --binary PATH --ref REF --out FILE [options]

Writes an OCI image-layout tarball holding one (static) binary.

options:
  --binary PATH        executable to put in the image (required)
  --ref REF            image reference, e.g. kpath.local/agent:v1 (required)
  --out FILE           output tarball (required)
  --path /IN/IMAGE     where the binary goes in the image (default /<basename>)
  --entrypoint ARG     entrypoint word, repeatable (default: the binary's path)
  --cmd ARG            default argument (CMD), repeatable
  --env K=V            environment variable, repeatable
  --file SRC:DST       extra file to copy into the image, repeatable
  --workdir DIR        working directory (default /)
  --user USER          user to run as (default: image default, root)
  --allow-dynamic      accept a dynamically linked binary

Import with: ctr -a SOCKET -n k8s.io images import FILE
`)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	if os.Args[1] != "build" {
		fmt.Fprintf(os.Stderr, "imagetool: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err := build(os.Args[2:]); err != nil {
		fmt.Fprintln(os.Stderr, "imagetool:", err)
		os.Exit(1)
	}
}

type options struct {
	binary, ref, out, path, workdir, user string
	entrypoint, cmd, env, files           multiFlag
	allowDynamic                          bool
}

func build(args []string) error {
	var o options
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.Usage = usage
	fs.StringVar(&o.binary, "binary", "", "")
	fs.StringVar(&o.ref, "ref", "", "")
	fs.StringVar(&o.out, "out", "", "")
	fs.StringVar(&o.path, "path", "", "")
	fs.StringVar(&o.workdir, "workdir", "/", "")
	fs.StringVar(&o.user, "user", "", "")
	fs.Var(&o.entrypoint, "entrypoint", "")
	fs.Var(&o.cmd, "cmd", "")
	fs.Var(&o.env, "env", "")
	fs.Var(&o.files, "file", "")
	fs.BoolVar(&o.allowDynamic, "allow-dynamic", false, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.binary == "" || o.ref == "" || o.out == "" {
		usage()
		return errors.New("--binary, --ref and --out are required")
	}
	if o.path == "" {
		o.path = "/" + filepath.Base(o.binary)
	}
	if !path.IsAbs(o.path) {
		return fmt.Errorf("--path %q must be absolute", o.path)
	}
	if len(o.entrypoint) == 0 {
		o.entrypoint = multiFlag{o.path}
	}

	fullName, tag, err := normalizeRef(o.ref)
	if err != nil {
		return err
	}
	arch, err := checkBinary(o.binary, o.allowDynamic)
	if err != nil {
		return err
	}

	files := map[string]fileEntry{o.path: {src: o.binary, mode: 0o755}}
	for _, f := range o.files {
		src, dst, ok := strings.Cut(f, ":")
		if !ok || src == "" || !path.IsAbs(dst) {
			return fmt.Errorf("--file %q: want SRC:/ABS/DST", f)
		}
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("--file: %w", err)
		}
		files[dst] = fileEntry{src: src, mode: int64(st.Mode().Perm())}
	}
	layerTar, err := makeLayer(files)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "imagetool build " + filepath.Base(o.binary)},
	})
	if err != nil {
		return fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Author = "kpath imagetool"
	cf.Config.Entrypoint = o.entrypoint
	cf.Config.Cmd = o.cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, o.env...)
	cf.Config.WorkingDir = o.workdir
	cf.Config.User = o.user
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: epoch})
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "imagetool-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		// containerd (ctr import) names the image after this annotation...
		"io.containerd.image.name": fullName,
		// ...and the OCI spec's own annotation holds the tag.
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	if err := tarDir(dir, o.out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s %s (%s/linux)\n", o.out, fullName, digest, arch)
	return nil
}

// normalizeRef returns the fully qualified name (as containerd/CRI spell it) and the tag.
func normalizeRef(ref string) (string, string, error) {
	t, err := name.NewTag(ref, name.WithDefaultRegistry("docker.io"))
	if err != nil {
		return "", "", fmt.Errorf("--ref %q: %w (want e.g. kpath.local/name:tag)", ref, err)
	}
	reg := t.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + t.RepositoryStr() + ":" + t.TagStr(), t.TagStr(), nil
}

// checkBinary returns the image architecture for an ELF executable and refuses
// dynamically linked ones unless allowed.
func checkBinary(p string, allowDynamic bool) (string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", fmt.Errorf("--binary %s: not a readable ELF executable: %w", p, err)
	}
	defer f.Close()
	var arch string
	switch f.Machine {
	case elf.EM_X86_64:
		arch = "amd64"
	case elf.EM_AARCH64:
		arch = "arm64"
	case elf.EM_386:
		arch = "386"
	case elf.EM_ARM:
		arch = "arm"
	case elf.EM_RISCV:
		arch = "riscv64"
	case elf.EM_PPC64:
		arch = "ppc64le"
	case elf.EM_S390:
		arch = "s390x"
	default:
		return "", fmt.Errorf("--binary %s: unsupported ELF machine %v", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP && !allowDynamic {
			return "", fmt.Errorf("--binary %s is dynamically linked; the image has no libc (build with CGO_ENABLED=0, or pass --allow-dynamic)", p)
		}
	}
	return arch, nil
}

type fileEntry struct {
	src  string
	mode int64
}

// makeLayer returns an uncompressed tar holding the files, their parent
// directories and /tmp, all owned by root with the epoch timestamp.
func makeLayer(files map[string]fileEntry) ([]byte, error) {
	dirs := map[string]bool{"tmp": true}
	var names []string
	for dst := range files {
		rel := strings.TrimPrefix(path.Clean(dst), "/")
		names = append(names, dst)
		for d := path.Dir(rel); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var dirList []string
	for d := range dirs {
		dirList = append(dirList, d)
	}
	sort.Strings(dirList)
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range dirList {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, dst := range names {
		fe := files[dst]
		data, err := os.ReadFile(fe.src)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(path.Clean(dst), "/"), Mode: fe.mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// tarDir writes the OCI layout directory as a tarball (written atomically).
func tarDir(dir, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Mode = 0o644
		if info.IsDir() {
			hdr.Name += "/"
			hdr.Mode = 0o755
		}
		hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = epoch, 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			if _, err := io.Copy(tw, src); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	return os.Rename(tmp, out)
}
