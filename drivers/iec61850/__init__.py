"""IEC 61850 MMS client driver.

The library's blocking client calls hold the GIL, so every IED connection lives in its own
worker process (`worker.py`, the only client-side module that imports the bindings); the
driver (`driver.py`) talks to it over a JSON-lines channel (`channel.py`, `wire.py`) and
turns its answers into readings and command results (`codec.py`).
"""
