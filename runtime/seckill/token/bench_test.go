package token

import "testing"

func BenchmarkIssue(b *testing.B) {
	s, _ := newSigner(b, keyA, keyB)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := s.Issue(sale, sku, user); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	s, _ := newSigner(b, keyA, keyB)
	tok := mustIssue(b, s, sale, sku, user)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(tok, sale, sku, user); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyParallel(b *testing.B) {
	s, _ := newSigner(b, keyA, keyB)
	tok := mustIssue(b, s, sale, sku, user)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Verify(tok, sale, sku, user); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkVerifyBadSignature(b *testing.B) {
	s, _ := newSigner(b, keyA, keyB)
	tok := mustIssue(b, s, sale, sku, user)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(tok, sale, "other", user); err != ErrBadSignature {
			b.Fatal(err)
		}
	}
}
