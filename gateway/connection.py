"""How the gateway reaches a device: TCP host and port, or a serial line.

Protocol-neutral; the protocol models (gateway.protocols) check a connection against what
their protocol needs, and the mapping's `Device` carries one.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the rates UARTs and field devices offer; anything else is almost always a typo
STANDARD_BAUDRATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)


class SerialLine(BaseModel):
    """A serial line: the device path (or a pyserial URL) and the character format."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    port: str = Field(min_length=1)
    baudrate: int = 9600
    #: N(one), E(ven) or O(dd)
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8

    @field_validator("baudrate")
    @classmethod
    def _standard_rate(cls, baudrate: int) -> int:
        if baudrate not in STANDARD_BAUDRATES:
            rates = ", ".join(str(r) for r in STANDARD_BAUDRATES)
            raise ValueError(f"baudrate {baudrate} is not a standard rate ({rates})")
        return baudrate

    @field_validator("parity", mode="before")
    @classmethod
    def _parity(cls, parity: object) -> str:
        text = str(parity).strip().upper()
        names = {"N": "N", "NONE": "N", "E": "E", "EVEN": "E", "O": "O", "ODD": "O"}
        if text not in names:
            raise ValueError(f"parity must be N (none), E (even) or O (odd), not {parity!r}")
        return names[text]

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, stopbits: int) -> int:
        if stopbits not in (1, 2):
            raise ValueError(f"stopbits must be 1 or 2, not {stopbits}")
        return stopbits

    @field_validator("bytesize")
    @classmethod
    def _bytesize(cls, bytesize: int) -> int:
        if bytesize not in (5, 6, 7, 8):
            raise ValueError(f"bytesize must be 5..8 data bits, not {bytesize}")
        return bytesize

    @property
    def char_bits(self) -> int:
        """Bits one character takes on the wire: start, data, parity, stop."""
        return 1 + self.bytesize + (self.parity != "N") + self.stopbits

    def __str__(self) -> str:
        return f"{self.port} ({self.baudrate} {self.bytesize}{self.parity}{self.stopbits})"


class Connection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    serial: SerialLine | None = None

    @model_validator(mode="after")
    def _one_transport(self) -> Connection:
        if self.serial is None and self.host is None:
            raise ValueError("needs host (and port) or serial")
        if self.serial is not None and self.host is not None:
            raise ValueError("give either host or serial, not both")
        return self
