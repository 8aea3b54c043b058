package plan

// The per-record constants, for TestPlanMemoryMatchesRedis to check each
// against what Redis measures.
const (
	BytesPerOrder     = bytesPerOrder
	BytesPerQueued    = bytesPerQueued
	BytesPerAdmission = bytesPerAdmission
	BytesPerBucket    = bytesPerBucket
)
