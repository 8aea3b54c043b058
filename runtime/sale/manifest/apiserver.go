package manifest

// What the API server does to a FlashSale on create, step by step, with the
// API server's own code and the generated CRD (config/crd) as the only
// source of rules and defaults. Each step names the code it mirrors in
// k8s.io/apiextensions-apiserver.

import (
	"context"
	"fmt"
	"sync"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	structuraldefaulting "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	schemaobjectmeta "k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/api/operation"
	metavalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/features"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/config/crd"
)

// crdSchema is the FlashSale CRD's schema for v1alpha1, prepared as the API
// server prepares it when it starts serving the CRD (crdHandler.
// getOrCreateServingInfoFor in pkg/apiserver/customresource_handler.go).
type crdSchema struct {
	// structural drives pruning, defaulting, list-map keys and CEL; its
	// defaults are pruned as the server prunes them.
	structural *structuralschema.Structural
	// openAPI checks types, formats, enums, bounds and patterns.
	openAPI apiservervalidation.SchemaValidator
	// rules evaluates the x-kubernetes-validations (CEL); nil if there are none.
	rules *cel.Validator
}

// flashSaleSchema compiles the embedded CRD once.
var flashSaleSchema = sync.OnceValues(func() (*crdSchema, error) {
	return newCRDSchema(crd.FlashSales, v1alpha1.GroupVersion.Version)
})

func newCRDSchema(data []byte, version string) (*crdSchema, error) {
	var def apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &def); err != nil {
		return nil, fmt.Errorf("read the FlashSale CRD: %w", err)
	}
	var v1Validation *apiextensionsv1.CustomResourceValidation
	for _, v := range def.Spec.Versions {
		if v.Name == version {
			v1Validation = v.Schema
		}
	}
	if v1Validation == nil || v1Validation.OpenAPIV3Schema == nil {
		return nil, fmt.Errorf("the FlashSale CRD has no schema for %s", version)
	}
	var validation apiextensions.CustomResourceValidation
	if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v1Validation, &validation, nil); err != nil {
		return nil, fmt.Errorf("convert the FlashSale CRD's schema: %w", err)
	}
	s, err := structuralschema.NewStructural(validation.OpenAPIV3Schema)
	if err != nil {
		return nil, fmt.Errorf("the FlashSale CRD's schema is not structural: %w", err)
	}
	if err := structuraldefaulting.PruneDefaults(s); err != nil {
		return nil, fmt.Errorf("prune the FlashSale CRD's defaults: %w", err)
	}
	openAPI, _, err := apiservervalidation.NewSchemaValidator(validation.OpenAPIV3Schema)
	if err != nil {
		return nil, fmt.Errorf("compile the FlashSale CRD's schema: %w", err)
	}
	return &crdSchema{
		structural: s,
		openAPI:    openAPI,
		rules:      cel.NewValidator(s, true, celconfig.PerCallLimit),
	}, nil
}

// prune drops the fields the schema does not know and returns their paths,
// as the API server's decoder does (unstructuredSchemaCoercer.apply in
// pkg/apiserver/customresource_handler.go); with strict field validation,
// which kubectl asks for by default, the server refuses them.
func (s *crdSchema) prune(u *unstructured.Unstructured) ([]string, error) {
	meta, hasMeta, unknown, err := schemaobjectmeta.GetObjectMetaWithOptions(u.Object, schemaobjectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		return nil, fmt.Errorf("decode FlashSale metadata: %w", err)
	}
	kind, apiVersion := u.GetKind(), u.GetAPIVersion()
	unknown = append(unknown, pruning.PruneWithOptions(u.Object, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})...)
	structuraldefaulting.PruneNonNullableNullsWithoutDefaults(u.Object, s.structural)
	coerceErr, paths := schemaobjectmeta.CoerceWithOptions(nil, u.Object, s.structural, false, schemaobjectmeta.CoerceOptions{ReturnUnknownFieldPaths: true})
	if coerceErr != nil {
		return nil, fmt.Errorf("decode FlashSale: %w", coerceErr)
	}
	unknown = append(unknown, paths...)
	u.SetKind(kind)
	u.SetAPIVersion(apiVersion)
	if hasMeta {
		if err := schemaobjectmeta.SetObjectMeta(u.Object, meta); err != nil {
			return nil, fmt.Errorf("decode FlashSale metadata: %w", err)
		}
	}
	return unknown, nil
}

// applyDefaults fills in the CRD's defaults (unstructuredDefaulter.Default in
// pkg/apiserver/customresource_handler.go), then drops the status, which a
// create cannot set (customResourceStrategy.PrepareForCreate).
func (s *crdSchema) applyDefaults(u *unstructured.Unstructured) {
	structuraldefaulting.Default(u.Object, s.structural)
	delete(u.Object, "status")
}

// validate is customResourceStrategy.Validate (pkg/registry/customresource):
// type and object metadata, the OpenAPI schema, embedded objects, list-map
// keys, then the CEL rules unless an earlier error makes them moot.
func (s *crdSchema) validate(u *unstructured.Unstructured) field.ErrorList {
	ctx := context.Background()
	if errs := validateTypeMeta(u); len(errs) > 0 {
		return errs
	}
	errs := validateObjectMeta(ctx, u)
	errs = append(errs, apiservervalidation.ValidateCustomResource(nil, u.Object, s.openAPI)...)
	errs = append(errs, schemaobjectmeta.Validate(ctx, nil, u.Object, s.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, s.structural, u.Object)...)
	if s.rules == nil {
		return errs
	}
	if blocking := blockingError(errs); blocking != nil {
		return append(errs, blocking)
	}
	celErrs, _ := s.rules.Validate(ctx, nil, s.structural, u.Object, nil, celconfig.RuntimeCELCostBudget)
	return append(errs, celErrs...)
}

// validateTypeMeta is customResourceValidator.ValidateTypeMeta: the server
// takes the kind from the URL and refuses a body that says otherwise.
func validateTypeMeta(u *unstructured.Unstructured) field.ErrorList {
	var errs field.ErrorList
	if u.GetKind() != "FlashSale" {
		errs = append(errs, field.Invalid(field.NewPath("kind"), u.GetKind(), "must be FlashSale"))
	}
	if want := v1alpha1.GroupVersion.String(); u.GetAPIVersion() != want {
		errs = append(errs, field.Invalid(field.NewPath("apiVersion"), u.GetAPIVersion(), "must be "+want))
	}
	return errs
}

// validateObjectMeta is customResourceValidator.validateObjectMetaDeclaratively:
// the generic checks of every namespaced object's metadata.
func validateObjectMeta(ctx context.Context, u *unstructured.Unstructured) field.ErrorList {
	path := field.NewPath("metadata")
	meta := &metav1.ObjectMeta{}
	if raw, ok := u.Object["metadata"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, meta); err != nil {
			return field.ErrorList{field.Invalid(path, raw, err.Error())}
		}
	}
	beta := utilfeature.DefaultFeatureGate.Enabled(features.DeclarativeValidationBeta)
	return metavalidation.ValidateObjectMetaDeclaratively(ctx, operation.Create, meta, nil, true, metavalidation.NameIsDNSSubdomain, path, beta)
}

// blockingError is hasBlockingErr in pkg/registry/customresource: after
// these errors the server does not run the CEL rules.
func blockingError(errs field.ErrorList) *field.Error {
	for _, err := range errs {
		switch err.Type {
		case field.ErrorTypeNotSupported, field.ErrorTypeRequired, field.ErrorTypeTooLong, field.ErrorTypeTooMany, field.ErrorTypeTypeInvalid:
			return field.Invalid(nil, nil, "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation")
		}
	}
	return nil
}
