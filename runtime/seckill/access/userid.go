package access

// MaxUserIDLen is the longest user id ValidUserID accepts.
const MaxUserIDLen = 64

var userIDByte = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "_.:@-" {
		t[c] = true
	}
	return t
}()

// ValidUserID reports whether s is 1 to 64 bytes of [A-Za-z0-9_.:@-].
func ValidUserID(s string) bool {
	if len(s) == 0 || len(s) > MaxUserIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !userIDByte[s[i]] {
			return false
		}
	}
	return true
}
