package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImage builds the flashsale binary the way `make image` does, packs it
// twice, and checks what the tarball holds: the config, the layer's files,
// a reproducible digest, and a binary that runs without a libc.
func TestImage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is linux; its binary is run by this test")
	}
	platform := "linux/" + runtime.GOARCH
	const version = "v0.0.0-imagetest"
	ctx, cancel := testContext(t)
	defer cancel()

	dir := t.TempDir()
	start := time.Now()
	bin, err := buildBinary(ctx, dir, platform, version)
	if err != nil && ctx.Err() != nil {
		t.Fatalf("%v\nthe static build did not finish within go test's -timeout: on a cold build cache it builds the whole module"+
			" again (`make image-cache` does that ahead, as `make test` does); raise -timeout", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("go build: %v", time.Since(start).Round(time.Millisecond))

	o := options{
		tag:      "flashsale-operator:imagetest",
		out:      filepath.Join(dir, "out", "a.tar"),
		binary:   bin,
		platform: platform,
		version:  version,
		source:   "https://example.com/flashsale",
		created:  time.Unix(0, 0).UTC(),
	}
	start = time.Now()
	first, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pack: %v, tarball %d bytes, layer %d bytes", time.Since(start).Round(time.Millisecond), first.FileSize, first.LayerSize)
	o.out = filepath.Join(dir, "out", "b.tar")
	second, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if first.Digest != second.Digest || first.ImageID != second.ImageID {
		t.Errorf("two images of the same binary differ: %s/%s vs %s/%s", first.Digest, first.ImageID, second.Digest, second.ImageID)
	}
	if a, b := fileHash(t, filepath.Join(dir, "out", "a.tar")), fileHash(t, o.out); a != b {
		t.Errorf("two tarballs of the same binary differ: sha256 %x vs %x", a, b)
	}

	// Read it back as `ctr images import` / `docker load` would.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(o.out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{"flashsale-operator:imagetest"}) {
		t.Errorf("manifest.json = %+v, want one image tagged flashsale-operator:imagetest", m)
	}
	img, err := tarball.ImageFromPath(o.out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := img.Digest(); err != nil || d != first.Digest {
		t.Errorf("digest read back = %v (%v), want %s", d, err, first.Digest)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/flashsale"}) || len(c.Cmd) != 0 || c.WorkingDir != "/" {
		t.Errorf("config: User %q, Entrypoint %q, Cmd %q, WorkingDir %q; want 65532:65532, [/flashsale], none, /", c.User, c.Entrypoint, c.Cmd, c.WorkingDir)
	}
	if len(c.Env) != 1 || !strings.HasPrefix(c.Env[0], "PATH=") {
		t.Errorf("config Env = %q, want PATH only", c.Env)
	}
	if c.Labels["org.opencontainers.image.source"] != o.source || c.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("config labels = %v", c.Labels)
	}
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH || !cfg.Created.Equal(o.created) {
		t.Errorf("config: %s/%s created %v, want %s created %v", cfg.OS, cfg.Architecture, cfg.Created.Time, platform, o.created)
	}

	// The one layer.
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	contents := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = hdr
		if hdr.Typeflag == tar.TypeReg {
			if contents[hdr.Name], err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
		if !hdr.ModTime.Equal(o.created) {
			t.Errorf("%s: mtime %v, want %v", hdr.Name, hdr.ModTime, o.created)
		}
	}
	want := []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
	}{
		{"flashsale", tar.TypeReg, 0o755, 65532, 65532},
		{"tmp/", tar.TypeDir, 0o1777, 0, 0},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0},
		{"etc/group", tar.TypeReg, 0o644, 0, 0},
		{"home/nonroot/", tar.TypeDir, 0o700, 65532, 65532},
	}
	for _, w := range want {
		h := files[w.name]
		if h == nil {
			t.Errorf("layer has no %s (has %v)", w.name, slices.Sorted(maps.Keys(files)))
			continue
		}
		if h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid {
			t.Errorf("%s: type %q mode %o owner %d:%d, want type %q mode %o owner %d:%d",
				w.name, h.Typeflag, h.Mode, h.Uid, h.Gid, w.typ, w.mode, w.uid, w.gid)
		}
	}
	if !bytes.Contains(contents["etc/passwd"], []byte("\nnonroot:x:65532:65532:")) ||
		!bytes.Contains(contents["etc/group"], []byte("\nnonroot:x:65532:\n")) {
		t.Errorf("no nonroot (65532) in /etc/passwd or /etc/group:\n%s\n%s", contents["etc/passwd"], contents["etc/group"])
	}

	// The packed binary is the built one, static, and runs.
	packed := filepath.Join(dir, "extracted", "flashsale")
	if err := os.MkdirAll(filepath.Dir(packed), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(packed, contents["flashsale"], 0o755); err != nil {
		t.Fatal(err)
	}
	if fileHash(t, packed) != fileHash(t, bin) {
		t.Fatal("/flashsale in the layer is not the binary that was packed")
	}
	if err := checkStatic(packed, runtime.GOARCH); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, packed, "version").CombinedOutput()
	if err != nil || string(out) != version+"\n" {
		t.Fatalf("/flashsale version: %v, printed %q, want %q", err, out, version+"\n")
	}
	out, err = exec.CommandContext(ctx, packed, "--help").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("seckill")) {
		t.Fatalf("/flashsale --help: %v\n%s", err, out)
	}
}

// TestPackRefusesBadBinaries checks that a binary that would not start in
// the image is refused: a dynamically linked one, one for another
// architecture, something that is not ELF.
func TestPackRefusesBadBinaries(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs a linux host binary")
	}
	dir := t.TempDir()
	notELF := filepath.Join(dir, "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ binary, platform, want string }{
		"not ELF":   {notELF, "linux/" + runtime.GOARCH, "not an ELF"},
		"not linux": {notELF, "windows/amd64", "want linux"},
	}
	// /bin/sh on a Linux distribution is dynamically linked (when it is not, skip the case).
	if sh, err := exec.LookPath("sh"); err == nil {
		if err := checkStatic(sh, runtime.GOARCH); err != nil && strings.Contains(err.Error(), "dynamically linked") {
			cases["dynamic"] = struct{ binary, platform, want string }{sh, "linux/" + runtime.GOARCH, "dynamically linked"}
			other := "arm64"
			if runtime.GOARCH == "arm64" {
				other = "amd64"
			}
			cases["other arch"] = struct{ binary, platform, want string }{sh, "linux/" + other, "not for " + other}
		}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out := filepath.Join(dir, name+".tar")
			_, err := pack(options{tag: "x:y", out: out, binary: c.binary, platform: c.platform, version: "dev"})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("pack(%s, %s) = %v, want an error containing %q", c.binary, c.platform, err, c.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused image left %s behind (%v)", out, err)
			}
		})
	}
}

// deadlineMargin is how long before the test binary's deadline testContext
// ends: time for the test to fail with the build's error and for go test to
// report it, rather than panicking at the -timeout.
const deadlineMargin = 30 * time.Second

// testContext returns a context that ends deadlineMargin before the test's
// own deadline (go test -timeout; none with -timeout 0). TestImage runs a
// static (CGO_ENABLED=0, -trimpath) go build of the whole module, whose
// cache entries the other test binaries never share: on a cold cache and a
// busy machine it takes minutes (`make test` runs it ahead: make
// image-cache), and only the caller of go test knows how many it may take.
func testContext(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	deadline, ok := t.Deadline()
	if !ok {
		return context.WithCancel(t.Context())
	}
	return context.WithDeadline(t.Context(), deadline.Add(-deadlineMargin))
}

func fileHash(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
