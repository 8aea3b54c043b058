package cli

import (
	"slices"
	"strings"
	"testing"
)

// TestParseNamespaces: --watch-namespaces takes names separated by commas,
// blanks and repeats ignored; a name that cannot be a namespace is refused,
// naming the flag.
func TestParseNamespaces(t *testing.T) {
	for in, want := range map[string][]string{
		"":                  nil,
		" , ":               nil,
		"shop":              {"shop"},
		"shop, outlet,shop": {"shop", "outlet"},
	} {
		got, err := parseNamespaces(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("parseNamespaces(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"Shop", "shop,out_let", "-shop"} {
		if _, err := parseNamespaces(bad); err == nil || !strings.Contains(err.Error(), "--watch-namespaces") {
			t.Errorf("parseNamespaces(%q): err %v, want a refusal naming --watch-namespaces", bad, err)
		}
	}
	if o := CacheOptions([]string{"shop"}); len(o.DefaultNamespaces) != 1 {
		t.Errorf("CacheOptions(shop) caches namespaces %v, want only shop", o.DefaultNamespaces)
	}
	if o := CacheOptions(nil); o.DefaultNamespaces != nil {
		t.Errorf("CacheOptions(nil) restricts namespaces to %v, want all", o.DefaultNamespaces)
	}
}
