"""Hub-core benchmarks: `make bench` (python -m benchmarks.run_all); results under benchmarks/out/."""
