"""The running gateway core as the other parts see it: typed as Protocols, so a part names
the few capabilities it uses and the composition root (gateway.app) hands itself over
without anyone importing it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.acquisition import DeviceSession
from gateway.config import LoadedConfig
from gateway.control import Controller
from gateway.points import PointTable


class RunningCore(Protocol):
    """The config in force, the latest values, the device links and the write path."""

    @property
    def config(self) -> LoadedConfig: ...
    @property
    def table(self) -> PointTable: ...
    @property
    def sessions(self) -> Mapping[str, DeviceSession]: ...
    @property
    def controller(self) -> Controller: ...
