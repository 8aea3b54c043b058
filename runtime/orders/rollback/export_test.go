package rollback

// SetAfterCancel installs the test hook that runs between a won cancel and
// the return of its unit (nil removes it).
func SetAfterCancel(f func(orderNo string)) { afterCancel = f }
