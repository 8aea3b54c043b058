// Command image builds the flashsale container image without Docker or a
// registry (run by `make image`, or `go run ./hack/image`): it packs a static
// flashsale binary into a one-layer image and writes it as a docker-archive
// tarball, which `ctr -n k8s.io images import` and `docker load` accept.
//
//	go run ./hack/image [--tag flashsale-operator:dev] [--out bin/flashsale-image.tar]
//	                    [--binary PATH] [--platform linux/amd64] [--version dev]
//
// The image has the layout of the Dockerfile's (distroless static, nonroot):
// /flashsale (0755, owned 65532:65532) as the entrypoint, /etc/passwd and
// /etc/group with root, nobody and nonroot (65532), /home/nonroot, and an
// empty /tmp (1777), run as user 65532:65532. Every timestamp is fixed
// (SOURCE_DATE_EPOCH, default 0), so the same binary always gives the same
// image digest. Without --binary it builds one itself: CGO_ENABLED=0,
// -trimpath, -ldflags "-s -w -X …/runtime/cli.version=VERSION". A binary that
// is not statically linked, or not built for --platform, is refused: it
// would not start in an image without a libc.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	// mainPackage is the package of the flashsale binary.
	mainPackage = "github.com/flashsale-dev/flashsale-operator"
	// versionVar is the variable `flashsale version` prints.
	versionVar = mainPackage + "/runtime/cli.version"
	// nonroot is the UID and GID the image runs as (distroless' nonroot).
	nonroot = 65532
	// binaryPath is where the binary lives in the image.
	binaryPath = "/flashsale"
)

// options are the command-line flags.
type options struct {
	tag      string // image reference written into the tarball
	out      string // tarball path
	binary   string // prebuilt static binary; empty: build one
	platform string // os/arch[/variant] of the image
	version  string // version label and, when building, the -X version
	source   string // org.opencontainers.image.source
	created  time.Time
}

// result describes a written image.
type result struct {
	Tag       string
	Digest    v1.Hash // manifest digest
	ImageID   v1.Hash // config digest: the ID `docker images` and `ctr images ls` show
	Platform  string
	LayerSize int64 // compressed
	FileSize  int64 // the tarball
}

func main() {
	o := options{}
	flag.StringVar(&o.tag, "tag", "flashsale-operator:dev", "image reference to tag the image with")
	flag.StringVar(&o.out, "out", "bin/flashsale-image.tar", "path of the docker-archive tarball to write")
	flag.StringVar(&o.binary, "binary", "", "prebuilt static flashsale binary to pack (default: build one with go build, CGO_ENABLED=0)")
	flag.StringVar(&o.platform, "platform", "linux/amd64", "platform of the image, os/arch[/variant]")
	flag.StringVar(&o.version, "version", "dev", "version for the org.opencontainers.image.version label and, when building the binary, for `flashsale version`")
	flag.StringVar(&o.source, "source", "https://github.com/flashsale-dev/flashsale-operator", "org.opencontainers.image.source label")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "hack/image: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}
	var err error
	if o.created, err = sourceDateEpoch(); err != nil {
		fmt.Fprintln(os.Stderr, "hack/image:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	res, err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hack/image:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s): %s %s, layer %s\n", o.out, mib(res.FileSize), res.Tag, res.Platform, mib(res.LayerSize))
	fmt.Printf("  manifest digest %s\n  image ID        %s\n", res.Digest, res.ImageID)
	fmt.Printf("load it with: ctr -n k8s.io images import %s   (or: docker load -i %s)\n", o.out, o.out)
}

// sourceDateEpoch returns the time every timestamp in the image gets:
// $SOURCE_DATE_EPOCH (seconds since 1970) if set, else the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// run builds the binary unless o.binary names one, then packs it.
func run(ctx context.Context, o options) (result, error) {
	if o.binary == "" {
		dir, err := os.MkdirTemp("", "flashsale-image-")
		if err != nil {
			return result{}, err
		}
		defer os.RemoveAll(dir)
		if o.binary, err = buildBinary(ctx, dir, o.platform, o.version); err != nil {
			return result{}, err
		}
	}
	return pack(o)
}

// buildBinary builds a static flashsale binary for platform into dir and
// returns its path. It must run inside the module (any directory of it).
func buildBinary(ctx context.Context, dir, platform, version string) (string, error) {
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "flashsale")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -X "+versionVar+"="+version, "-o", out, mainPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture)
	if p.Architecture == "arm" && p.Variant != "" {
		cmd.Env = append(cmd.Env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s for %s: %w", mainPackage, platform, err)
	}
	return out, nil
}

// goArchToELF maps GOARCH (the OCI architecture names are the same) to ELF machines.
var goArchToELF = map[string]elf.Machine{
	"amd64":   elf.EM_X86_64,
	"arm64":   elf.EM_AARCH64,
	"arm":     elf.EM_ARM,
	"386":     elf.EM_386,
	"ppc64le": elf.EM_PPC64,
	"s390x":   elf.EM_S390,
	"riscv64": elf.EM_RISCV,
}

// checkStatic fails unless path is a statically linked ELF executable for
// the Linux architecture arch: no program interpreter, no shared libraries.
func checkStatic(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	if want, ok := goArchToELF[arch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %s, not for %s", path, f.Machine, arch)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (has a program interpreter); build it with CGO_ENABLED=0", path)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: reading its dynamic section: %w", path, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("%s needs shared libraries %v; build it with CGO_ENABLED=0", path, libs)
	}
	return nil
}

// pack writes the image of the binary o.binary to o.out.
func pack(o options) (result, error) {
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return result{}, fmt.Errorf("--tag: %w", err)
	}
	p, err := v1.ParsePlatform(o.platform)
	if err != nil {
		return result{}, fmt.Errorf("--platform: %w", err)
	}
	if p.OS != "linux" || p.Architecture == "" {
		return result{}, fmt.Errorf("--platform %q: want linux/ARCH[/VARIANT]", o.platform)
	}
	if err := checkStatic(o.binary, p.Architecture); err != nil {
		return result{}, err
	}
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return result{}, err
	}
	img, layerSize, err := buildImage(bin, p, o)
	if err != nil {
		return result{}, err
	}
	if err := writeTarball(ref, img, o.out); err != nil {
		return result{}, err
	}

	res := result{Tag: ref.String(), Platform: p.String(), LayerSize: layerSize}
	if res.Digest, err = img.Digest(); err != nil {
		return result{}, err
	}
	if res.ImageID, err = img.ConfigName(); err != nil {
		return result{}, err
	}
	st, err := os.Stat(o.out)
	if err != nil {
		return result{}, err
	}
	res.FileSize = st.Size()
	return res, nil
}

// buildImage returns the one-layer image of bin for platform p, and the
// size of its compressed layer.
func buildImage(bin []byte, p *v1.Platform, o options) (v1.Image, int64, error) {
	layerGz, err := layerTarGz(bin, o.created)
	if err != nil {
		return nil, 0, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerGz)), nil
	})
	if err != nil {
		return nil, 0, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: o.created},
			CreatedBy: "hack/image: " + binaryPath + ", /etc/passwd, /etc/group, /home/nonroot, /tmp",
			Comment:   "flashsale " + o.version,
		},
	})
	if err != nil {
		return nil, 0, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, 0, err
	}
	if img, err = mutate.ConfigFile(img, imageConfig(cfg, p, o)); err != nil {
		return nil, 0, err
	}
	return img, int64(len(layerGz)), nil
}

// imageConfig returns a copy of cfg with the image's platform, creation
// time, entrypoint, user, environment and labels.
func imageConfig(cfg *v1.ConfigFile, p *v1.Platform, o options) *v1.ConfigFile {
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: o.created}
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Entrypoint = []string{binaryPath}
	cfg.Config.Cmd = nil
	cfg.Config.User = fmt.Sprintf("%d:%d", nonroot, nonroot)
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "flashsale-operator",
		"org.opencontainers.image.description": "flashsale: the FlashSale operator and its data plane (seckill API, order worker, rollback) in one binary",
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.url":         o.source,
		"org.opencontainers.image.version":     o.version,
	}
	return cfg
}

// writeTarball writes img, tagged ref, as a docker-archive tarball to out.
// It writes next to out and renames, so a failed run never leaves a
// truncated tarball behind for `ctr images import`.
func writeTarball(ref name.Tag, img v1.Image, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), ".flashsale-image-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	werr := tarball.Write(ref, img, tmp)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", out, werr)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nobody:x:65534:\n" +
		"nonroot:x:65532:\n"
)

// layerTarGz returns the image's only layer, gzip-compressed. The entries,
// their order and every timestamp are fixed, so the bytes depend only on bin
// and mtime.
func layerTarGz(bin []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
		body     []byte
	}
	entries := []entry{
		{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/group", typ: tar.TypeReg, mode: 0o644, body: []byte(group)},
		{name: "etc/passwd", typ: tar.TypeReg, mode: 0o644, body: []byte(passwd)},
		{name: strings.TrimPrefix(binaryPath, "/"), typ: tar.TypeReg, mode: 0o755, uid: nonroot, gid: nonroot, body: bin},
		{name: "home/", typ: tar.TypeDir, mode: 0o755},
		{name: "home/nonroot/", typ: tar.TypeDir, mode: 0o700, uid: nonroot, gid: nonroot},
		// /tmp is world-writable with the sticky bit, like on any Linux.
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
	}
	var buf bytes.Buffer
	// BestSpeed: 4x faster than the default level for a layer ~10% larger;
	// this image is loaded into a local cluster, never pulled over a network.
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		hdr := &tar.Header{
			Typeflag: e.typ,
			Name:     e.name,
			Mode:     e.mode,
			Uid:      e.uid,
			Gid:      e.gid,
			Size:     int64(len(e.body)),
			ModTime:  mtime,
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer entry %s: %w", e.name, err)
		}
	}
	if err := errors.Join(tw.Close(), zw.Close()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
