package purchase

import "context"

// RunBatch runs one script call for a batch of purchases of one bucket (tests).
func (s *Script) RunBatch(ctx context.Context, batch []Request) ([]Result, error) {
	return s.run(ctx, batch)
}
