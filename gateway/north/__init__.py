"""Northbound: the gateway's link to the aggregator's management system (AMS).

HTTPS server and client over mutual TLS, MQTT over TLS, the durable outbox, the inbound
pipeline and the AMS simulator. See docs/northbound.md.
"""
