"""A protocol known only to the tests, in one folder like every protocol: its address and
options model (protocol.py), its driver (driver.py) and its simulator front end
(simulator.py). It joins the gateway only through a test distribution's `mgms.protocols`
entry point (tests/support/toyproto/install.py), which proves that adding a protocol edits
nothing else.

The wire is one ASCII line per request over TCP: `READ <name>` answered `OK <number>` or
`ERR <why>`, `WRITE <name> <number>` answered `OK` or `ERR <why>`.
"""
