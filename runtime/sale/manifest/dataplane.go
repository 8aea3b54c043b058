package manifest

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// dataPlaneChecks are the checks the data plane makes before the API
// server's: they hold for a sale run from a file, where no API server stands
// between the manifest and the pods. Everything else a FlashSale must satisfy
// is in the CRD (api/v1alpha1 markers), so that kubectl and --file refuse
// the same manifests with the same messages.
func dataPlaneChecks(u *unstructured.Unstructured) field.ErrorList {
	var errs field.ErrorList
	// The API server accepts metadata.generateName alone and makes up the
	// name before it validates; nobody does that for a file, and the sale's
	// Redis keys, order numbers and URLs all carry its name. (Without either,
	// the server's own check says "name or generateName is required".)
	if u.GetName() == "" && u.GetGenerateName() != "" {
		errs = append(errs, field.Required(field.NewPath("metadata", "name"),
			"a sale run from a file needs a name: metadata.generateName is only honoured by the API server"))
	}
	return errs
}
