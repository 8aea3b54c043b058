package token

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"time"
)

// DefaultWatchInterval is the poll interval of WatchFile when every <= 0.
const DefaultWatchInterval = 5 * time.Second

// WatchFile polls the key file at path every interval (DefaultWatchInterval
// when every <= 0) until ctx is done, and swaps s's key ring atomically when
// the file content changes. It re-reads by path each time, so the symlink swap
// of a Kubernetes Secret volume is followed. The first check happens at once.
//
// A file that cannot be read or parsed keeps the current ring; the error is
// passed to onErr (may be nil) once per distinct problem, not at every poll.
// A content change that yields the keys already in use swaps nothing.
func WatchFile(ctx context.Context, path string, every time.Duration, s *Signer, onErr func(error)) {
	if every <= 0 {
		every = DefaultWatchInterval
	}
	report := func(err error) {
		if onErr != nil {
			onErr(err)
		}
	}
	var lastSum [sha256.Size]byte
	haveSum := false
	lastReadErr := ""
	check := func() {
		content, err := readKeyFile(path)
		if err != nil {
			if msg := err.Error(); msg != lastReadErr {
				lastReadErr = msg
				report(err)
			}
			return
		}
		lastReadErr = ""
		sum := sha256.Sum256(content)
		if haveSum && bytes.Equal(sum[:], lastSum[:]) {
			return
		}
		lastSum, haveSum = sum, true
		ring, err := ParseKeyFile(content)
		if err != nil {
			report(fmt.Errorf("%w (file %s; keeping the current keys %v)", err, path, s.KeyRing().IDs()))
			return
		}
		if !ring.sameKeys(s.KeyRing()) {
			s.SetKeyRing(ring)
		}
	}
	check()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
