// Package v1alpha1 contains the API types of the flashsale.dev/v1alpha1 group:
// the FlashSale resource a shop applies to run one flash sale end to end.
//
// +kubebuilder:object:generate=true
// +groupName=flashsale.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version used to register these objects.
	GroupVersion = schema.GroupVersion{Group: "flashsale.dev", Version: "v1alpha1"}

	// SchemeBuilder adds the types of this group-version to a scheme. It is
	// apimachinery's, so importing the API costs no controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types in this group-version to the given scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &FlashSale{}, &FlashSaleList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
