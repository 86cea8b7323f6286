"""The parts of bench/bench_recommend.py: memory, throughput and breakdown, their data, and their child processes."""
