// Package manifest reads the FlashSale manifest that every data-plane command
// takes with --file: the same YAML a user applies with kubectl. Reading it
// strictly, defaulting it and validating it here gives a sale run without
// Kubernetes the same checks the API server gives one run by the operator.
package manifest

import (
	"fmt"
	"os"

	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// maxSize bounds what we read: a FlashSale larger than etcd's object limit
// could never be applied to a cluster either.
const maxSize = 1536 * 1024

// Load reads, defaults and validates the FlashSale in the file at path.
func Load(path string) (*v1alpha1.FlashSale, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sale manifest: %w", err)
	}
	fs, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("sale manifest %s: %w", path, err)
	}
	return fs, nil
}

// Parse decodes, defaults and validates a FlashSale manifest. Unknown fields
// are an error, so a typo like "perUserLimt" never silently means "default".
func Parse(data []byte) (*v1alpha1.FlashSale, error) {
	if len(data) > maxSize {
		return nil, fmt.Errorf("manifest is %d bytes, more than the %d a FlashSale may have", len(data), maxSize)
	}
	var fs v1alpha1.FlashSale
	if err := yaml.UnmarshalStrict(data, &fs); err != nil {
		return nil, fmt.Errorf("decode FlashSale: %w", err)
	}
	if fs.Kind == "" {
		return nil, fmt.Errorf("not a FlashSale manifest: kind is missing")
	}
	fs.SetDefaults()
	if err := fs.Validate(); err != nil {
		return nil, fmt.Errorf("invalid FlashSale %s: %w", fs.SaleKey(), err)
	}
	return &fs, nil
}
