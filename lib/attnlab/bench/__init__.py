"""Benchmarks (never timed tests): warm-up, interleaved rounds, medians, correctness checked first."""
