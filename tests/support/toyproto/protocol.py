"""Toy addressing: a point's address is the name the toy device knows it by."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway.protocols.base import Address, AddressError, PointTyping, ProtocolSpec

_NAME = re.compile(r"^[A-Za-z0-9_.]{1,32}$")


@dataclass(frozen=True)
class ToyAddress(Address):
    name: str

    def conflicts_with(self, other: Address) -> bool:
        return other == self

    def __str__(self) -> str:
        return self.name


def parse(text: str, typing: PointTyping[Any]) -> ToyAddress:
    if not _NAME.match(text):
        raise AddressError("address", f"toy address {text!r} must be 1..32 of A-Z a-z 0-9 _ .")
    return ToyAddress(text)


class ToyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


SPEC = ProtocolSpec(
    name="toy",
    parse_address=parse,
    options_model=ToyOptions,
    data_types=frozenset(),
    driver="tests.support.toyproto.driver:ToyDriver",
    front_end="tests.support.toyproto.simulator:ToyFrontEnd",
)
