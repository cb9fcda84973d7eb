"""The analytic backend's standard scene for the engine tests: three blobs whose centres
are ground truth (one near each of three corners, so drags between them stay inside)."""

BLOB_CENTRES = [[16, 16], [48, 44], [16, 48]]
