"""MGMS gateway: the microgrid management system between field devices and the aggregator."""

__version__ = "0.2.0"
