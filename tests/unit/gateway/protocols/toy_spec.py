"""A protocol known only to the tests, registered through a test distribution's metadata."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from gateway.protocols.base import Address, PointTyping, ProtocolSpec


@dataclass(frozen=True)
class ToyAddress(Address):
    name: str

    def conflicts_with(self, other: Address) -> bool:
        return other == self

    def __str__(self) -> str:
        return self.name


def parse(text: str, typing: PointTyping) -> ToyAddress:
    return ToyAddress(text)


class ToyOptions(BaseModel):
    pass


SPEC = ProtocolSpec(
    name="toy", parse_address=parse, options_model=ToyOptions, data_types=frozenset()
)
