"""Southbound drivers: thin adapters from a field protocol to the driver contract."""
