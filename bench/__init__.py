"""The benchmark suite of campus-bridge: `make bench` = `python -m bench.run_all` (see docs/benchmarks.md).

Every scenario drives the bridge as it ships (`python -m bridge run -c <generated config>`) against a real
Kafka broker and the simulated gateway in its own process, and measures the bridge process from /proc.
"""
