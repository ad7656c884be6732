"""Flaky cloud: local sandboxes sold in four zones, failing where FLAKY_FAIL says."""
