// Package token issues and verifies the dynamic path token of a flash sale.
//
// Before purchasing, a buyer asks for a short-lived token bound to (sale, SKU,
// user); the purchase call must present it. The token is an HMAC-SHA256 over
// the version, key id, sale, SKU, user, expiry (unix milliseconds) and a
// 16-byte random nonce. The nonce doubles as the idempotency key downstream:
// one token yields at most one order.
//
// Token string (URL-safe, no padding, about 87 bytes):
//
//	v1.<kid: 8 hex>.<expiry unix ms, base36>.<nonce: 22 b64url>.<mac: 43 b64url>
//
// Keys rotate without downtime: a KeyRing holds at most two keys, signs with
// the first (current) and verifies with any of them, selected directly by the
// key id written in the token.
package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"sync"
)

const (
	// MinKeyLen is the minimum length of a key, in bytes (after decoding).
	MinKeyLen = 32
	// MaxKeys is the number of keys a ring may hold: current and previous.
	MaxKeys = 2
	// maxKeyFileSize bounds what LoadKeyRing and WatchFile read.
	maxKeyFileSize = 64 << 10
)

// Key is one HMAC key. ID is the first 4 bytes of SHA-256 of the secret, in
// lower-case hex; it is not secret and is safe to log.
type Key struct {
	ID     string
	secret []byte
}

// KeyID returns the key id of a secret: hex of the first 4 bytes of SHA-256.
func KeyID(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:4])
}

// NewKey validates a secret (at least MinKeyLen bytes) and returns its Key.
// The secret is copied.
func NewKey(secret []byte) (Key, error) {
	if len(secret) < MinKeyLen {
		return Key{}, fmt.Errorf("token: key too short: %d bytes, need at least %d", len(secret), MinKeyLen)
	}
	return Key{ID: KeyID(secret), secret: bytes.Clone(secret)}, nil
}

// ParseKeys parses key lines: empty (whitespace-only) lines are skipped, the
// first remaining line is the current key, the second the previous one; more
// is an error, none is an error. Each line is trimmed, then decoded:
//
//	hex:<hex>        hex-encoded key
//	base64:<b64>     base64 (standard or URL alphabet, padding optional)
//	anything else    the raw bytes of the trimmed line
//
// Every key must be at least MinKeyLen bytes after decoding. Error messages
// never contain key material.
func ParseKeys(lines []string) ([]Key, error) {
	var keys []Key
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(keys) == MaxKeys {
			return nil, fmt.Errorf("token: too many keys (line %d): at most %d (current, previous)", i+1, MaxKeys)
		}
		secret, err := decodeKey(line)
		if err != nil {
			return nil, fmt.Errorf("token: key on line %d: %w", i+1, err)
		}
		k, err := NewKey(secret)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("token: no key found")
	}
	return keys, nil
}

func decodeKey(line string) ([]byte, error) {
	switch {
	case strings.HasPrefix(line, "hex:"):
		b, err := hex.DecodeString(strings.TrimSpace(line[len("hex:"):]))
		if err != nil {
			return nil, errors.New("invalid hex encoding")
		}
		return b, nil
	case strings.HasPrefix(line, "base64:"):
		s := strings.TrimRight(strings.TrimSpace(line[len("base64:"):]), "=")
		enc := base64.RawStdEncoding
		if strings.ContainsAny(s, "-_") {
			enc = base64.RawURLEncoding
		}
		b, err := enc.DecodeString(s)
		if err != nil {
			return nil, errors.New("invalid base64 encoding")
		}
		return b, nil
	default:
		return []byte(line), nil
	}
}

// KeyRing is an immutable, ordered set of 1..MaxKeys keys: it signs with the
// first and verifies with any. Safe for concurrent use.
type KeyRing struct {
	keys []*ringKey
}

type ringKey struct {
	id     string
	secret []byte
	pool   sync.Pool // *macState
}

// macState is the per-call scratch space, pooled per key so the hot path
// neither re-derives the HMAC pads nor allocates buffers.
type macState struct {
	h     hash.Hash
	msg   []byte // MAC input
	sum   []byte // MAC output (cap 32)
	buf   []byte // token text on Issue, base64 source on Verify
	nonce [nonceLen]byte
	mac   [macLen]byte
}

func (k *ringKey) get() *macState {
	if st, ok := k.pool.Get().(*macState); ok {
		return st
	}
	return &macState{
		h:   hmac.New(sha256.New, k.secret),
		msg: make([]byte, 0, 128),
		sum: make([]byte, 0, sha256.Size),
		buf: make([]byte, 0, 128),
	}
}

func (k *ringKey) put(st *macState) {
	if cap(st.msg) > 4096 || cap(st.buf) > 4096 {
		return // do not keep oversized buffers around
	}
	st.h.Reset()
	k.pool.Put(st)
}

// NewKeyRing builds a ring from raw secrets, current first. Each secret must
// be at least MinKeyLen bytes; 1..MaxKeys secrets, with distinct key ids.
func NewKeyRing(secrets ...[]byte) (*KeyRing, error) {
	keys := make([]Key, 0, len(secrets))
	for i, s := range secrets {
		k, err := NewKey(s)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys = append(keys, k)
	}
	return NewKeyRingFromKeys(keys...)
}

// NewKeyRingFromKeys builds a ring from parsed keys (see ParseKeys), current
// first.
func NewKeyRingFromKeys(keys ...Key) (*KeyRing, error) {
	if len(keys) == 0 {
		return nil, errors.New("token: key ring needs at least one key")
	}
	if len(keys) > MaxKeys {
		return nil, fmt.Errorf("token: key ring holds at most %d keys, got %d", MaxKeys, len(keys))
	}
	r := &KeyRing{keys: make([]*ringKey, 0, len(keys))}
	for i, k := range keys {
		if len(k.secret) < MinKeyLen || k.ID != KeyID(k.secret) {
			return nil, fmt.Errorf("token: key %d is not valid (build it with NewKey or ParseKeys)", i)
		}
		for _, o := range r.keys {
			if o.id == k.ID {
				return nil, fmt.Errorf("token: duplicate key id %s", k.ID)
			}
		}
		r.keys = append(r.keys, &ringKey{id: k.ID, secret: bytes.Clone(k.secret)})
	}
	return r, nil
}

// IDs returns the key ids, current first (safe to log).
func (r *KeyRing) IDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.id
	}
	return ids
}

// CurrentID returns the id of the signing key.
func (r *KeyRing) CurrentID() string { return r.keys[0].id }

func (r *KeyRing) lookup(id string) *ringKey {
	for _, k := range r.keys {
		if k.id == id {
			return k
		}
	}
	return nil
}

// sameKeys reports whether both rings hold the same keys in the same order.
func (r *KeyRing) sameKeys(o *KeyRing) bool {
	if r == nil || o == nil || len(r.keys) != len(o.keys) {
		return false
	}
	for i := range r.keys {
		if !hmac.Equal(r.keys[i].secret, o.keys[i].secret) {
			return false
		}
	}
	return true
}

// ParseKeyFile parses the content of a key file (one key per line, see
// ParseKeys) into a ring.
func ParseKeyFile(content []byte) (*KeyRing, error) {
	keys, err := ParseKeys(strings.Split(string(content), "\n"))
	if err != nil {
		return nil, err
	}
	return NewKeyRingFromKeys(keys...)
}

// ParseKeyEnv parses an environment variable value: comma-separated keys,
// current first, same encodings as ParseKeys.
func ParseKeyEnv(value string) (*KeyRing, error) {
	keys, err := ParseKeys(strings.Split(value, ","))
	if err != nil {
		return nil, err
	}
	return NewKeyRingFromKeys(keys...)
}

// LoadKeyRing loads the keys: from file when file is non-empty (a mounted
// Secret; an unreadable or invalid file is an error, with no fallback), else
// from envValue when it is non-blank, else it generates a random 32-byte
// development key and returns generated=true: the caller must log a loud
// warning, since tokens will not verify across pods or restarts.
func LoadKeyRing(file, envValue string) (ring *KeyRing, generated bool, err error) {
	switch {
	case file != "":
		content, err := readKeyFile(file)
		if err != nil {
			return nil, false, err
		}
		ring, err = ParseKeyFile(content)
		if err != nil {
			return nil, false, fmt.Errorf("%w (file %s)", err, file)
		}
		return ring, false, nil
	case strings.TrimSpace(envValue) != "":
		ring, err = ParseKeyEnv(envValue)
		if err != nil {
			return nil, false, fmt.Errorf("%w (environment)", err)
		}
		return ring, false, nil
	default:
		secret := make([]byte, MinKeyLen)
		rand.Read(secret) // never fails (Go >= 1.24)
		ring, err = NewKeyRing(secret)
		return ring, true, err
	}
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token: key file: %w", err)
	}
	defer f.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(io.LimitReader(f, maxKeyFileSize+1)); err != nil {
		return nil, fmt.Errorf("token: key file: %w", err)
	}
	if b.Len() > maxKeyFileSize {
		return nil, fmt.Errorf("token: key file %s larger than %d bytes", path, maxKeyFileSize)
	}
	return b.Bytes(), nil
}
