// Package manifest reads the FlashSale manifest that every data-plane command
// takes with --file: the same YAML a user applies with kubectl.
//
// A sale run without Kubernetes gets the checks the API server gives one run
// by the operator, from the same source: the generated CRD, embedded by
// config/crd. Parse decodes a manifest the way the API server decodes a
// FlashSale on create (unknown fields are an error, as with kubectl's default
// --validate=strict), applies the CRD's defaults with the API server's own
// structural defaulting, and validates the result with the API server's own
// code (k8s.io/apiextensions-apiserver): the OpenAPI schema, the list-map keys
// and the CEL rules (apiserver.go). Only a few checks are the data plane's own
// (dataplane.go). A refusal is the API server's 422 Invalid error, naming
// each field.
package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
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

// Parse decodes, defaults and validates a FlashSale manifest as the API
// server does on create. Unknown fields are an error, so a typo like
// "perUserLimt" never silently means "default". A manifest without a
// namespace is in "default", as with kubectl.
func Parse(data []byte) (*v1alpha1.FlashSale, error) {
	if len(data) > maxSize {
		return nil, fmt.Errorf("manifest is %d bytes, more than the %d a FlashSale may have", len(data), maxSize)
	}
	u, err := decode(data)
	if err != nil {
		return nil, err
	}
	return admit(u)
}

// Validate checks a FlashSale built in Go as the API server would check it on
// create: a copy is sent through Parse's checks as a Go client would send it
// (fields left zero are omitted, and so defaulted). fs itself is not changed.
func Validate(fs *v1alpha1.FlashSale) error {
	c := fs.DeepCopy()
	if c.APIVersion == "" && c.Kind == "" {
		c.APIVersion, c.Kind = v1alpha1.GroupVersion.String(), "FlashSale"
	}
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode FlashSale: %w", err)
	}
	u, err := decode(data)
	if err != nil {
		return err
	}
	_, err = admit(u)
	return err
}

// decode reads YAML (or JSON) into the generic form the API server validates:
// integers as int64, other numbers as float64. A key given twice is an error.
func decode(data []byte) (*unstructured.Unstructured, error) {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("decode FlashSale: %w", err)
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(j, &obj); err != nil {
		return nil, fmt.Errorf("decode FlashSale: %w", err)
	}
	if obj == nil {
		return nil, fmt.Errorf("decode FlashSale: the manifest is empty")
	}
	u := &unstructured.Unstructured{Object: obj}
	if u.GetKind() == "" {
		return nil, fmt.Errorf("not a FlashSale manifest: kind is missing")
	}
	return u, nil
}

// admit takes u through what the API server does to a FlashSale on create,
// plus the data plane's own checks, and returns it as the Go type.
func admit(u *unstructured.Unstructured) (*v1alpha1.FlashSale, error) {
	s, err := flashSaleSchema()
	if err != nil {
		return nil, err
	}
	if u.GetNamespace() == "" {
		u.SetNamespace("default") // kubectl's default; the API server takes it from the URL
	}
	unknown, err := s.prune(u)
	if err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("strict decoding error: unknown field %s", strings.Join(quote(unknown), ", unknown field "))
	}
	s.applyDefaults(u)
	errs := dataPlaneChecks(u) // first: without them the server's checks can mislead
	if len(errs) == 0 {
		errs = s.validate(u)
	}
	if len(errs) > 0 {
		return nil, apierrors.NewInvalid(v1alpha1.GroupVersion.WithKind("FlashSale").GroupKind(), u.GetName(), errs)
	}
	return toFlashSale(u)
}

// toFlashSale decodes the admitted object into the Go type as a client of the
// API server would (encoding/json), refusing a field the type does not have:
// that would mean the CRD and the type disagree.
func toFlashSale(u *unstructured.Unstructured) (*v1alpha1.FlashSale, error) {
	j, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("encode FlashSale: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	var fs v1alpha1.FlashSale
	if err := dec.Decode(&fs); err != nil {
		return nil, fmt.Errorf("decode FlashSale: %w", err)
	}
	return &fs, nil
}

func quote(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}
