package kubectl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/runtime/kubectl"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// krewPlugin is the part of krew's Plugin (v1alpha2) the release relies on.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Homepage         string `json:"homepage"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// TestKrewManifest: config/krew/flashsale.yaml parses strictly as a krew
// Plugin named flashsale (kubectl flashsale), whose linux/amd64 and
// linux/arm64 archives install the binary main dispatches on.
func TestKrewManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(), "config", "krew", "flashsale.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		t.Fatalf("config/krew/flashsale.yaml: %v", err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" || p.Metadata.Name != "flashsale" {
		t.Fatalf("not krew's Plugin flashsale: %s %s %s", p.APIVersion, p.Kind, p.Metadata.Name)
	}
	if p.Spec.ShortDescription == "" || p.Spec.Description == "" || p.Spec.Version == "" {
		t.Fatal("shortDescription, description and version are required by krew")
	}
	seen := map[string]bool{}
	for _, pl := range p.Spec.Platforms {
		osArch := pl.Selector.MatchLabels["os"] + "/" + pl.Selector.MatchLabels["arch"]
		seen[osArch] = true
		if pl.Bin != kubectl.BinaryName {
			t.Errorf("%s: bin %q, want %q (main runs the plugin only under that name)", osArch, pl.Bin, kubectl.BinaryName)
		}
		if !strings.Contains(pl.URI, strings.ReplaceAll(osArch, "/", "_")) || pl.SHA256 == "" {
			t.Errorf("%s: uri %q does not name its platform, or no sha256", osArch, pl.URI)
		}
		if len(pl.Files) == 0 || pl.Files[0].From != kubectl.BinaryName {
			t.Errorf("%s: the archive's files do not install %s: %+v", osArch, kubectl.BinaryName, pl.Files)
		}
	}
	if !seen["linux/amd64"] || !seen["linux/arm64"] || len(seen) != len(p.Spec.Platforms) {
		t.Fatalf("platforms %v, want linux/amd64 and linux/arm64, each once", seen)
	}
}
