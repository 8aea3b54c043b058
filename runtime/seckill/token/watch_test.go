package token

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeSecretVolume mimics the kubelet: the key file is a symlink to
// ..data/keys, and ..data is a symlink swapped atomically to a new directory.
func writeSecretVolume(t *testing.T, dir string, gen int, content string) {
	t.Helper()
	ts := filepath.Join(dir, "..gen"+strings.Repeat("x", gen))
	if err := os.Mkdir(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "keys"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if gen == 0 {
		if err := os.Symlink(filepath.Join("..data", "keys"), filepath.Join(dir, "keys")); err != nil {
			t.Fatal(err)
		}
	}
}

type errLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }
func (l *errLog) n() int        { l.mu.Lock(); defer l.mu.Unlock(); return len(l.errs) }
func (l *errLog) get(i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errs[i]
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	writeSecretVolume(t, dir, 0, string(keyA)+"\n")

	ring, gen, err := LoadKeyRing(path, "")
	if err != nil || gen {
		t.Fatal(err, gen)
	}
	s, _ := newSigner(t, keyA) // fake clock, ring replaced below
	s.SetKeyRing(ring)
	oldTok := mustIssue(t, s, sale, sku, user)

	var log errLog
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		WatchFile(ctx, path, 10*time.Millisecond, s, log.add)
		close(stopped)
	}()
	ids := func() string { return strings.Join(s.KeyRing().IDs(), ",") }

	// Same keys at start: nothing swapped.
	time.Sleep(50 * time.Millisecond)
	if s.KeyRing() != ring || log.n() != 0 {
		t.Fatalf("ring swapped without change (%v) or %d errors", ids(), log.n())
	}

	// Rotation: [B, A].
	writeSecretVolume(t, dir, 1, string(keyB)+"\n"+string(keyA)+"\n")
	waitFor(t, "rotation to [B,A]", func() bool { return ids() == KeyID(keyB)+","+KeyID(keyA) })
	if _, err := s.Verify(oldTok, sale, sku, user); err != nil {
		t.Fatalf("old token after rotation: %v", err)
	}
	newTok := mustIssue(t, s, sale, sku, user)

	// Broken file: old ring kept, error reported once.
	before := s.KeyRing()
	writeSecretVolume(t, dir, 2, "tooshort\n")
	waitFor(t, "error report", func() bool { return log.n() >= 1 })
	time.Sleep(50 * time.Millisecond) // several more polls
	if s.KeyRing() != before {
		t.Fatal("broken file replaced the ring")
	}
	if n := log.n(); n != 1 {
		t.Fatalf("%d error reports for one broken file, want 1", n)
	}
	if e := log.get(0).Error(); !strings.Contains(e, "too short") || strings.Contains(e, "tooshort") {
		t.Fatalf("error report %q", e)
	}
	if _, err := s.Verify(newTok, sale, sku, user); err != nil {
		t.Fatalf("verify during broken file: %v", err)
	}

	// Old key dropped: [B].
	writeSecretVolume(t, dir, 3, string(keyB)+"\n")
	waitFor(t, "drop to [B]", func() bool { return ids() == KeyID(keyB) })
	if _, err := s.Verify(oldTok, sale, sku, user); err != ErrUnknownKey {
		t.Fatalf("old token after drop: %v", err)
	}
	if _, err := s.Verify(newTok, sale, sku, user); err != nil {
		t.Fatalf("new token after drop: %v", err)
	}

	// File vanishes: reported, ring kept.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "missing-file report", func() bool { return log.n() >= 2 })
	if ids() != KeyID(keyB) {
		t.Fatal("ring changed on missing file")
	}

	cancel()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("WatchFile did not return after cancel")
	}
}

func TestWatchFileDefaultInterval(t *testing.T) {
	// every <= 0 must not panic (time.NewTicker panics on 0); the first check
	// is immediate, so a change is applied at once.
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	if err := os.WriteFile(path, []byte(string(keyC)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newSigner(t, keyA)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { WatchFile(ctx, path, 0, s, nil); close(done) }()
	waitFor(t, "initial load", func() bool { return s.KeyRing().CurrentID() == KeyID(keyC) })
	cancel()
	<-done
}
