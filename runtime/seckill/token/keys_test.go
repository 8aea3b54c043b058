package token

import (
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyID(t *testing.T) {
	id := KeyID(keyA)
	if len(id) != 8 || strings.ToLower(id) != id {
		t.Fatalf("id %q", id)
	}
	if KeyID(keyB) == id {
		t.Fatal("ids collide")
	}
}

func TestShortKeyRejected(t *testing.T) {
	short := []byte(strings.Repeat("s", MinKeyLen-1))
	if _, err := NewKey(short); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("NewKey: %v", err)
	}
	if _, err := NewKeyRing(keyA, short); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("NewKeyRing: %v", err)
	}
	if _, err := ParseKeys([]string{string(short)}); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Fatalf("ParseKeys: %v", err)
	}
	if _, err := ParseKeys([]string{"hex:" + hex.EncodeToString(short)}); err == nil {
		t.Fatal("ParseKeys hex short: want error")
	}
	if _, err := NewKeyRingFromKeys(Key{ID: "00000000"}); err == nil {
		t.Fatal("zero Key accepted")
	}
}

func TestNewKeyRing(t *testing.T) {
	if _, err := NewKeyRing(); err == nil {
		t.Error("empty ring accepted")
	}
	if _, err := NewKeyRing(keyA, keyB, keyC); err == nil {
		t.Error("3 keys accepted")
	}
	if _, err := NewKeyRing(keyA, keyA); err == nil {
		t.Error("duplicate key accepted")
	}
	r := mustRing(t, keyB, keyA)
	if got := r.IDs(); len(got) != 2 || got[0] != KeyID(keyB) || got[1] != KeyID(keyA) || r.CurrentID() != KeyID(keyB) {
		t.Errorf("IDs %v current %s", got, r.CurrentID())
	}
	// the ring copies secrets
	sec := []byte(strings.Repeat("m", 32))
	r2 := mustRing(t, sec)
	s := NewSigner(r2, 0, nil)
	tok := mustIssue(t, s, sale, sku, user)
	sec[0] = 'X'
	if _, err := s.Verify(tok, sale, sku, user); err != nil {
		t.Fatalf("mutating caller slice changed the ring: %v", err)
	}
}

func TestParseKeysEncodings(t *testing.T) {
	raw := strings.Repeat("k", 32)
	bin := make([]byte, 32)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	tests := []struct {
		name    string
		lines   []string
		want    [][]byte // nil: want error
		wantErr string
	}{
		{"raw", []string{raw}, [][]byte{[]byte(raw)}, ""},
		{"raw trimmed", []string{"  " + raw + "\r"}, [][]byte{[]byte(raw)}, ""},
		{"hex", []string{"hex:" + hex.EncodeToString(bin)}, [][]byte{bin}, ""},
		{"hex upper", []string{"hex:" + strings.ToUpper(hex.EncodeToString(bin))}, [][]byte{bin}, ""},
		{"base64 std padded", []string{"base64:" + base64.StdEncoding.EncodeToString(bin)}, [][]byte{bin}, ""},
		{"base64 std raw", []string{"base64:" + base64.RawStdEncoding.EncodeToString(bin)}, [][]byte{bin}, ""},
		{"base64 url", []string{"base64:" + base64.URLEncoding.EncodeToString(bin)}, [][]byte{bin}, ""},
		{"two keys, blank lines", []string{"", raw, "   ", "hex:" + hex.EncodeToString(bin), ""}, [][]byte{[]byte(raw), bin}, ""},
		{"three keys", []string{raw, string(keyB), string(keyC)}, nil, "too many keys"},
		{"none", []string{"", "  "}, nil, "no key"},
		{"bad hex", []string{"hex:zz" + hex.EncodeToString(bin)}, nil, "invalid hex"},
		{"bad base64", []string{"base64:!!" + base64.StdEncoding.EncodeToString(bin)}, nil, "invalid base64"},
		{"short after decoding", []string{"base64:" + base64.StdEncoding.EncodeToString(bin[:31])}, nil, "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseKeys(tt.lines)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				for _, l := range tt.lines {
					if len(l) >= 8 && strings.Contains(err.Error(), l) {
						t.Fatalf("error leaks key material: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != len(tt.want) {
				t.Fatalf("%d keys, want %d", len(keys), len(tt.want))
			}
			for i, k := range keys {
				if string(k.secret) != string(tt.want[i]) || k.ID != KeyID(tt.want[i]) {
					t.Errorf("key %d mismatch", i)
				}
			}
		})
	}
}

func TestLoadKeyRing(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte(string(keyB)+"\n"+"hex:"+hex.EncodeToString(keyA)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	envAB := "base64:" + base64.StdEncoding.EncodeToString(keyA) + ", " + string(keyB)

	tests := []struct {
		name      string
		file, env string
		wantIDs   []string
		generated bool
		wantErr   bool
	}{
		{"file", file, "", []string{KeyID(keyB), KeyID(keyA)}, false, false},
		{"file wins over env", file, string(keyC), []string{KeyID(keyB), KeyID(keyA)}, false, false},
		{"env", "", envAB, []string{KeyID(keyA), KeyID(keyB)}, false, false},
		{"env single hex", "", "hex:" + hex.EncodeToString(keyC), []string{KeyID(keyC)}, false, false},
		{"env three keys", "", string(keyA) + "," + string(keyB) + "," + string(keyC), nil, false, true},
		{"env short", "", "tooshort", nil, false, true},
		{"missing file, no fallback", filepath.Join(dir, "nope"), string(keyC), nil, false, true},
		{"bad file", bad, "", nil, false, true},
		{"none: generated", "", "  ", nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, gen, err := LoadKeyRing(tt.file, tt.env)
			if tt.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if gen != tt.generated {
				t.Fatalf("generated %v", gen)
			}
			if tt.generated {
				if len(r.IDs()) != 1 {
					t.Fatalf("generated ring %v", r.IDs())
				}
				r2, _, _ := LoadKeyRing("", "")
				if r2.CurrentID() == r.CurrentID() {
					t.Fatal("generated keys are not random")
				}
				return
			}
			if strings.Join(r.IDs(), ",") != strings.Join(tt.wantIDs, ",") {
				t.Fatalf("ids %v, want %v", r.IDs(), tt.wantIDs)
			}
		})
	}
}

func TestLoadKeyRingTooLarge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, []byte(strings.Repeat("x", maxKeyFileSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadKeyRing(file, ""); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err %v", err)
	}
}
