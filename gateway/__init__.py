"""MGMS gateway: the microgrid management system between field devices and the aggregator."""

__version__ = "0.1.0"
