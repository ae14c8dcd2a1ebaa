"""The gateway config: the microgrid, its DERs, the coupling point and the mapping files.

Power in kW, energy in kWh, SOC in percent. DER P > 0 injects into the microgrid;
coupling-point P > 0 imports from the grid. Numbers must be finite (NaN compares false with
every bound, so a NaN rating would pass every check).
"""

from __future__ import annotations

import enum
import ipaddress
import math
from datetime import datetime, time
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
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
    #: reactive capability as a power-factor limit: |Q| <= tan(acos(pf)) * |P|
    power_factor_min: float | None = Field(default=None, gt=0, le=1)
    #: controllable load: share of its demand that may be curtailed, percent
    curtailable_pct: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Ratings:
        if self.p_min_kw > self.p_max_kw:
            raise ValueError(f"p_min_kw {self.p_min_kw} is greater than p_max_kw {self.p_max_kw}")
        if self.soc_min_pct > self.soc_max_pct:
            raise ValueError("soc_min_pct is greater than soc_max_pct")
        return self


class EvSession(BaseModel):
    """The daily charging session of an EV charger (times of day in UTC)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    arrival: time
    departure: time
    #: energy the vehicle must receive between arrival and departure
    energy_kwh: float = Field(gt=0)


class Der(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=_ID)
    type: DerType
    control: ControlManner = ControlManner.CENTRALIZED
    ratings: Ratings = Field(default_factory=Ratings)
    ev: EvSession | None = None
    description: str = ""

    @model_validator(mode="after")
    def _battery_needs_energy(self) -> Der:
        if self.type is DerType.BATTERY and self.ratings.energy_kwh is None:
            raise ValueError("a battery needs ratings.energy_kwh")
        if self.ev is not None and self.type is not DerType.EV_CHARGER:
            raise ValueError("ev: is only for an ev_charger")
        return self


class CouplingPoint(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: the id points use as `der:` for coupling-point measurements
    id: str = Field(default="pcc", pattern=_ID)
    import_limit_kw: float = Field(gt=0)
    export_limit_kw: float = Field(gt=0)
    q_limit_kvar: float | None = Field(default=None, gt=0)
    #: the device whose energy counters settle the coupling point in verification (a
    #: billing meter with its own time-stamped load profile); unset: the first mapped one
    billing_meter: str | None = None


class InternalLimit(BaseModel):
    """A line or transformer inside the microgrid feeding a group of DERs: the net injection
    of the group (sum of their P) must stay within -import_limit_kw .. export_limit_kw."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=_ID)
    ders: list[str] = Field(min_length=1)
    import_limit_kw: float = Field(gt=0)
    export_limit_kw: float = Field(gt=0)
    description: str = ""


class StandingReserve(BaseModel):
    """Another service the microgrid holds (e.g. a frequency containment reserve): the named
    DERs keep up_kw / down_kw of headroom and the energy to sustain it for sustain_min."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=_ID)
    service: str = Field(min_length=1)
    ders: list[str] = Field(min_length=1)
    up_kw: float = Field(default=0.0, ge=0)
    down_kw: float = Field(default=0.0, ge=0)
    sustain_min: float = Field(default=15.0, ge=0)
    #: contract period; open ends mean always
    start: datetime | None = None
    end: datetime | None = None


class FlexSettings(BaseModel):
    """Flexibility functions: interval grid, forecast method, control loop, other reserves."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    #: interval length in seconds (900: the 15-minute settlement period)
    interval_s: int = Field(default=900, ge=1, le=3600)
    horizon_h: float = Field(default=24.0, gt=0, le=168)
    #: seconds between two corrections of an active activation
    control_cycle_s: float = Field(default=2.0, gt=0, le=300)
    #: set points changing less than this are not rewritten
    setpoint_deadband_kw: float = Field(default=0.2, ge=0)
    history_days: int = Field(default=7, ge=1, le=60)
    #: weight of day d-1 relative to day d in the same-time-of-day profile
    day_weight_decay: float = Field(default=0.7, gt=0, le=1)
    #: e-folding time of the last measured deviation from the profile
    persistence_tau_min: float = Field(default=60.0, gt=0)
    #: weight of an external forecast against the history forecast where both exist
    external_weight: float = Field(default=0.8, ge=0, le=1)
    #: share of a battery's usable energy the reservation plan keeps untouched in its worst
    #: case, for what the forecast gets wrong
    energy_margin_pct: float = Field(default=5.0, ge=0, le=50)
    #: accept activations that no accepted reservation covers
    allow_unreserved_activation: bool = False
    reserves: list[StandingReserve] = Field(default_factory=list)

    @model_validator(mode="after")
    def _grid(self) -> FlexSettings:
        if 86400 % self.interval_s:
            raise ValueError(f"interval_s {self.interval_s} does not divide a day")
        return self


class Microgrid(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_ID)
    name: str = ""


class OpsConfig(BaseModel):
    """The operations listener: /healthz, /readyz, /metrics and the status page."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    #: an IP address; loopback by default (reach it over SSH); any other needs a token
    listen: str = "127.0.0.1"
    port: int = Field(default=8780, ge=0, le=65535)
    #: file holding the operator's bearer token (required off loopback; /healthz stays open)
    operator_token_file: Path | None = None
    #: how long start-up waits for every device's first connection attempt before READY
    ready_wait_s: float = Field(default=15.0, ge=0)
    #: how long a stop waits for shutdown hooks (activation, outbox) before closing links
    drain_s: float = Field(default=5.0, ge=0)
    #: its own connection limits (gateway.listeners), apart from the north listener's: a
    #: request's headers within header_timeout_s of its first byte, an idle connection
    #: closed after idle_timeout_s, at most max_connections (the oldest idle dropped first)
    header_timeout_s: float = Field(default=5.0, gt=0)
    idle_timeout_s: float = Field(default=15.0, gt=0)
    max_connections: int = Field(default=32, ge=1, le=1024)

    @model_validator(mode="after")
    def _guarded_off_loopback(self) -> OpsConfig:
        try:
            address = ipaddress.ip_address(self.listen)
        except ValueError:
            raise ValueError(f"listen must be an IP address, got {self.listen!r}") from None
        if not address.is_loopback and self.operator_token_file is None:
            raise ValueError(
                f"listen {self.listen} is not loopback: set operator_token_file so only "
                "operators can read the status page and metrics"
            )
        return self

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.listen).is_loopback


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    microgrid: Microgrid
    state_dir: Path
    mappings: list[Path] = Field(min_length=1)
    ders: list[Der] = Field(default_factory=list)
    coupling_point: CouplingPoint
    #: days of samples kept in the store
    retention_days: float = Field(default=30.0, gt=0)
    #: cap of the reconnect backoff in seconds
    reconnect_max_s: float = Field(default=30.0, gt=0)
    ops: OpsConfig = Field(default_factory=OpsConfig)
    internal_limits: list[InternalLimit] = Field(default_factory=list)
    flex: FlexSettings = Field(default_factory=FlexSettings)
    #: the link to the aggregator (AMS); absent: the gateway runs without one
    north: NorthConfig | None = None

    @model_validator(mode="after")
    def _known_ders_referenced(self) -> GatewayConfig:
        known = {d.id for d in self.ders}
        used = [(f"internal limit {x.id!r}", x.ders) for x in self.internal_limits]
        used += [(f"reserve {r.id!r}", r.ders) for r in self.flex.reserves]
        for owner, ders in used:
            unknown = sorted(set(ders) - known)
            if unknown:
                raise ValueError(f"{owner} names unknown DER(s) {', '.join(unknown)}")
        return self

    @model_validator(mode="after")
    def _horizon_fits_the_message_limit(self) -> GatewayConfig:
        """A notification for the whole flex horizon must fit north.server.max_statements."""
        if self.north is None:
            return self
        # here: the Smart API message model loads rdflib, which a site without north never needs
        from gateway.smartapi.flexibility import statements_for

        intervals = math.ceil(self.flex.horizon_h * 3600 / self.flex.interval_s)
        needed = statements_for(intervals)
        limit = self.north.server.max_statements
        if needed > limit:
            raise ValueError(
                f"north.server.max_statements {limit} is below the {needed} RDF statements a "
                f"notification for the flex horizon may hold ({intervals} intervals of "
                f"{self.flex.interval_s} s); raise it or shorten flex.horizon_h"
            )
        return self


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
