"""Modbus driver: register codec, read plan and the client adapter."""
