"""Protocol-neutral knowledge of each protocol: address syntax and device options.

This package never imports a protocol library. Each protocol registers a `ProtocolSpec`
that parses a mapping's address string into a typed address object (the one shared place
where addresses are parsed; drivers receive the typed objects) and validates the device's
`options`.
"""

from __future__ import annotations

from gateway.protocols import dlms as _dlms  # noqa: F401  (registers itself)
from gateway.protocols import iec104 as _iec104  # noqa: F401  (registers itself)
from gateway.protocols import iec61850 as _iec61850  # noqa: F401  (registers itself)
from gateway.protocols import modbus as _modbus  # noqa: F401  (registers itself)
from gateway.protocols.base import Address, ProtocolSpec, known_protocols, register, spec_for

__all__ = ["Address", "ProtocolSpec", "known_protocols", "register", "spec_for"]
