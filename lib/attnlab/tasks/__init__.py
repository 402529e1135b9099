"""Algorithmic tasks: LRA ListOps (and the length-generalization suites), one per file."""
