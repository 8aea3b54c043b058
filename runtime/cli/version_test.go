package cli_test

import (
	"bytes"
	"testing"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
)

func TestVersionCommand(t *testing.T) {
	root := cli.NewRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil {
		t.Fatalf("flashsale version: %v\n%s", err, out.String())
	}
	if got, want := out.String(), cli.Version()+"\n"; got != want {
		t.Fatalf("flashsale version printed %q, want %q", got, want)
	}
	if cli.Version() != "dev" {
		t.Fatalf("Version() = %q without -ldflags -X, want \"dev\"", cli.Version())
	}
}
