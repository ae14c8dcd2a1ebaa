"""The gateway config: the microgrid, its DERs, the coupling point and the mapping files.

Power in kW, energy in kWh, SOC in percent. DER P > 0 injects into the microgrid;
coupling-point P > 0 imports from the grid.
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.mapping import Device, MappingFile
from gateway.north.config import NorthConfig

_ID = r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$"


class DerType(enum.StrEnum):
    BATTERY = "battery"
    PV = "pv"
    LOAD = "load"
    GENERATOR = "generator"
    EV_CHARGER = "ev_charger"


class ControlManner(enum.StrEnum):
    CENTRALIZED = "centralized"  # the MGMS writes set points
    DISTRIBUTED = "distributed"  # the device's own controller receives a target


class Ratings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p_min_kw: float = 0.0
    p_max_kw: float = 0.0
    s_max_kva: float | None = Field(default=None, gt=0)
    q_min_kvar: float | None = None
    q_max_kvar: float | None = None
    energy_kwh: float | None = Field(default=None, gt=0)
    soc_min_pct: float = Field(default=0.0, ge=0, le=100)
    soc_max_pct: float = Field(default=100.0, ge=0, le=100)
    efficiency_charge: float = Field(default=1.0, gt=0, le=1)
    efficiency_discharge: float = Field(default=1.0, gt=0, le=1)
    ramp_kw_per_s: float | None = Field(default=None, gt=0)
    min_stable_kw: float | None = Field(default=None, ge=0)
    cost_per_kwh: float = 0.0

    @model_validator(mode="after")
    def _ordered(self) -> Ratings:
        if self.p_min_kw > self.p_max_kw:
            raise ValueError(f"p_min_kw {self.p_min_kw} is greater than p_max_kw {self.p_max_kw}")
        if self.soc_min_pct > self.soc_max_pct:
            raise ValueError("soc_min_pct is greater than soc_max_pct")
        return self


class Der(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID)
    type: DerType
    control: ControlManner = ControlManner.CENTRALIZED
    ratings: Ratings = Field(default_factory=Ratings)
    description: str = ""

    @model_validator(mode="after")
    def _battery_needs_energy(self) -> Der:
        if self.type is DerType.BATTERY and self.ratings.energy_kwh is None:
            raise ValueError("a battery needs ratings.energy_kwh")
        return self


class CouplingPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the id points use as `der:` for coupling-point measurements
    id: str = Field(default="pcc", pattern=_ID)
    import_limit_kw: float = Field(gt=0)
    export_limit_kw: float = Field(gt=0)
    q_limit_kvar: float | None = Field(default=None, gt=0)


class Microgrid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
    name: str = ""


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    microgrid: Microgrid
    state_dir: Path
    mappings: list[Path] = Field(min_length=1)
    ders: list[Der] = Field(default_factory=list)
    coupling_point: CouplingPoint
    #: days of samples kept in the store
    retention_days: float = Field(default=30.0, gt=0)
    #: cap of the reconnect backoff in seconds
    reconnect_max_s: float = Field(default=30.0, gt=0)
    #: the link to the aggregator (AMS); absent: the gateway runs without one
    north: NorthConfig | None = None


class LoadedConfig(BaseModel):
    """A config with its mapping files read and cross-checked; what the gateway runs on."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    source: Path
    gateway: GatewayConfig
    mappings: dict[Path, MappingFile]

    @property
    def devices(self) -> list[Device]:
        return [d for m in self.mappings.values() for d in m.devices]

    def der(self, der_id: str) -> Der | None:
        return next((d for d in self.gateway.ders if d.id == der_id), None)
