"""The benchmark scripts (`python benchmarks/benchmark_methods.py`, `python benchmarks/benchmark_speed.py`) and their
recorded results; a package so that the tests import the scripts' functions like any module."""
