"""Releases made here: the procedural sample release and the fast noise release of the tests and benchmarks."""
