"""Benchmarks: every variant on the test split (size, scores, latency, intervals) and the batch-1
latency candidates. Imports every layer below apps."""
