from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError
from gateway.loader import load_config
from gateway.north.config import NorthConfig, RetryPolicy, Role
from gateway.north.service import North
from tests.support.procs import DEMO_CONFIG, ROOT

NORTH_YAML = """
north:
  identity: https://mgms.example/gateway
  tls:
    ca: [certs/ca.pem]
    cert: certs/gateway.pem
    key: certs/gateway.key
  signing:
    key: certs/gateway-signing.key
    key_id: gateway-1
    trust: certs/trust-gateway.yaml
  allow:
    - subject: ams
      role: ams
      senders: [https://ams.example/ams]
  ams:
    forecast_url: https://127.0.0.1:9443/smartapi/v1.0e1.0/forecast/
    verification_url: https://127.0.0.1:9443/smartapi/v1.0e1.0/verification/
"""


def write_config(tmp_path: Path, north: str) -> Path:
    demo = DEMO_CONFIG.read_text()
    text = demo.replace("../mappings/", f"{ROOT / 'mappings'}/")
    text = re.sub(r"(?m)^state_dir: .*$", f"state_dir: {tmp_path / 'state'}", text)
    path = tmp_path / "gateway.yaml"
    path.write_text(text + north)
    return path


def base() -> dict[str, object]:
    return {
        "identity": "https://mgms.example/gateway",
        "tls": {"ca": ["ca.pem"], "cert": "gw.pem", "key": "gw.key"},
        "signing": {"key": "s.key", "key_id": "gw-1", "trust": "trust.yaml"},
        "allow": [{"subject": "ams", "role": "ams"}],
        "ams": {
            "forecast_url": "https://ams.example/forecast",
            "verification_url": "https://ams.example/verification",
        },
    }


def test_the_demo_config_without_north_still_loads() -> None:
    assert load_config(DEMO_CONFIG).gateway.north is None


def test_north_section_loads_and_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    loaded = load_config(write_config(tmp_path, NORTH_YAML))
    north = loaded.gateway.north
    assert north is not None and north.transport == "https"
    assert north.allow[0].role is Role.AMS
    service = North.from_config(loaded, codec=object())  # type: ignore[arg-type]
    assert service.config.tls.cert == tmp_path / "certs" / "gateway.pem"
    assert service.config.signing.trust == tmp_path / "certs" / "trust-gateway.yaml"
    assert service.state_dir == tmp_path / "state"


def test_a_north_mistake_is_reported_with_file_and_field(tmp_path: Path) -> None:
    broken = NORTH_YAML.replace("role: ams", "role: janitor")
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, broken))
    text = str(err.value)
    assert "gateway.yaml" in text and "role" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transport": "mqtt"}, "needs an `mqtt:` section"),
        (
            {"allow": [{"subject": "ams", "role": "ams"}, {"subject": "ams", "role": "operator"}]},
            "names a subject twice: ams",
        ),
        (
            {"ams": {"forecast_url": "http://x.example/f", "verification_url": "https://x/v"}},
            "must be https",
        ),
        ({"allow": []}, "at least 1"),
        ({"outbox": {"initial_s": 10, "max_s": 5}}, "greater than max_s"),
        ({"outbox": {"give_up_after_s": 600}}, "greater than or equal to 3600"),
        (
            {"allow": [{"subject": "ams", "role": "ams", "profile": "smartapi-1.1"}]},
            "profile smartapi-1.1 needs the peer's `senders`",
        ),
        (
            {"allow": [{"subject": "ams", "role": "ams", "senders": ["urn:a"], "timezone": "X/Y"}]},
            "unknown time zone 'X/Y'",
        ),
        ({"allow": [{"subject": "ams", "role": "ams", "profile": "smartapi-2"}]}, "profile"),
        (
            {
                "allow": [
                    {"subject": "a", "role": "ams", "senders": ["urn:a"]},
                    {
                        "subject": "b",
                        "role": "ams",
                        "senders": ["urn:b"],
                        "profile": "smartapi-1.1",
                    },
                ]
            },
            "AMS entries disagree on the profile",
        ),
    ],
)
def test_invalid_sections_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NorthConfig.model_validate({**base(), **change})


def test_profiles_by_sender() -> None:
    allow = [
        {
            "subject": "ams",
            "role": "ams",
            "senders": ["urn:ams"],
            "profile": "smartapi-1.1",
            "timezone": "Europe/Helsinki",
        },
        {"subject": "op", "role": "operator", "senders": ["urn:op"]},
    ]
    config = NorthConfig.model_validate({**base(), "allow": allow})
    profiles = config.profiles()
    assert profiles.of("urn:ams").legacy and profiles.of("urn:ams").timezone == "Europe/Helsinki"
    assert not profiles.of("urn:op").legacy and not profiles.of("urn:someone").legacy
    assert config.ams_profile().legacy


def test_a_site_without_an_ams_needs_no_ams_section() -> None:
    """Only the access endpoint (operators) is served; nothing is sent or queued."""
    config = NorthConfig.model_validate({k: v for k, v in base().items() if k != "ams"})
    assert config.ams is None and config.transport == "https"


def test_retry_policy_defaults_keep_trying_a_day() -> None:
    policy = RetryPolicy()
    assert policy.give_up_after_s >= 3600
    assert policy.delay(100) == policy.max_s


def test_a_notification_for_the_flex_horizon_must_fit_the_statement_limit(tmp_path: Path) -> None:
    """A day of 1-minute intervals needs about 18,800 statements a message: 10,000 is refused
    with the arithmetic, the default 20,000 loads."""
    north = NORTH_YAML + "  server: {max_statements: 10000}\n"
    flex = "flex: {interval_s: 60, horizon_h: 24}\n"
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, flex + north))
    text = str(err.value)
    assert "north.server.max_statements 10000 is below the 18840 RDF statements" in text, text
    assert "1440 intervals of 60 s" in text
    loaded = load_config(write_config(tmp_path, flex + NORTH_YAML))
    assert loaded.gateway.north is not None and loaded.gateway.north.server.max_statements == 20_000
