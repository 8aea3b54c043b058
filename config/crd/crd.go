// Package crd holds the FlashSale CustomResourceDefinition that controller-gen
// generates into bases/ (make manifests) from the markers in api/v1alpha1. It
// embeds the file so that a program checking a manifest offline
// (runtime/sale/manifest) applies the very schema, defaults and CEL rules the
// API server applies, with no hand-kept copy to drift from them.
package crd

import _ "embed" // for go:embed

// FlashSales is the generated CRD of flashsales.flashsale.dev, as YAML.
//
//go:embed bases/flashsale.dev_flashsales.yaml
var FlashSales []byte
