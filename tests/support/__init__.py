"""Shared test helpers: free ports, simulator processes."""
