"""The soak's market side (bench/soak.py): the parts that load the gateway's northbound and
flexibility layers, and the AMS process they drive (not benchmarks of their own)."""
