"""The parts that load the gateway's northbound and flexibility layers for bench/soak.py
and bench/latency.py, the AMS process they drive and the raw protocol writes that are the
latency bench's floor (not benchmarks of their own)."""
