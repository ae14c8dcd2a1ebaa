"""Protocol-neutral knowledge of each protocol: address syntax and device options.

This package never imports a protocol library. Each protocol is a `ProtocolSpec`, found
through the `mgms.protocols` entry-point group (pyproject.toml), that parses a mapping's
address string into a typed address object (the one shared place where addresses are
parsed; drivers receive the typed objects), validates the device's `options` and names its
driver and simulator front end. The group is read on first use. A new protocol is one
package plus one entry-point line.
"""

from __future__ import annotations

from gateway.protocols.base import Address, ProtocolSpec, known_protocols, register, spec_for

__all__ = ["Address", "ProtocolSpec", "known_protocols", "register", "spec_for"]
