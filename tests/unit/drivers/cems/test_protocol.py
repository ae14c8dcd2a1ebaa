"""CEMS addresses and options: what parses, what is refused and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.cems.protocol import CemsOptions, RestAddress, WriteMethod, parse
from gateway.errors import ConfigError
from gateway.loader import load_mappings
from gateway.protocols.base import AddressError, PointTyping

READ = PointTyping()


def test_path_and_pointer() -> None:
    address = parse("/api/v1/building?site=2#/load/p~1kw", READ)
    assert address == RestAddress("/api/v1/building?site=2", "/load/p~1kw")
    assert address.json_pointer.resolve({"load": {"p/kw": 4.5}}) == 4.5
    assert str(address) == "/api/v1/building?site=2#/load/p~1kw"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("/api/v1/building", "must be 'path#/json/pointer'"),
        ("api#/x", "must start with one '/'"),
        ("//evil.example/x#/x", "must start with one '/'"),
        ("/a b#/x", "white space"),
        ("/api#x", "JSON pointer 'x'"),
        ("/api#", "pointer is empty"),
    ],
)
def test_bad_addresses_say_why(text: str, why: str) -> None:
    with pytest.raises(AddressError, match=why) as caught:
        parse(text, READ)
    assert caught.value.field == "address"


def test_same_member_conflicts_other_members_do_not() -> None:
    a, b, c = parse("/r#/a", READ), parse("/r#/a", READ), parse("/r#/b", READ)
    assert a.conflicts_with(b) and not a.conflicts_with(c)


def test_put_builds_the_objects_on_the_way() -> None:
    body: dict[str, object] = {"setpoint": {"unit": "kW"}}
    parse("/w#/setpoint/value", READ).put(body, 12.5)
    assert body == {"setpoint": {"unit": "kW", "value": 12.5}}
    with pytest.raises(ValueError, match="holds a str"):
        parse("/w#/setpoint/unit/x", READ).put(body, 1)


def test_options_read_the_token_relative_to_the_mapping(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("abc123\nignored\n")
    options = CemsOptions.model_validate(
        {"token_file": "t", "writes": {"/w": {"method": "POST"}}},
        context={"base_dir": tmp_path},
    )
    assert options.token == "abc123"
    assert options.template("/w").method is WriteMethod.POST
    assert options.template("/other").method is WriteMethod.PUT
    assert "abc123" not in repr(options)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"cert_file": "c.pem"}, "cert_file and key_file come together"),
        ({"token_file": "missing"}, "token_file .* cannot be read"),
        ({"token_file": "empty"}, "token_file .* is empty"),
        ({"writes": {"w": {}}}, "path 'w' must start with '/'"),
        ({"writes": {"/w": {"method": "DELETE"}}}, "method"),
        ({"max_body": 10}, "max_body"),
        ({"verify": False}, "verify"),
        ({"ca_file": "nowhere.pem"}, "ca_file .*nowhere.pem' is not a readable file"),
        ({"profile": "smartapi-2"}, "profile"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"peer_sender": "not an iri"}, "peer_sender"),
        (
            {
                "push": {
                    "host": "h",
                    "port": 1,
                    "cert_file": "empty",
                    "key_file": "empty",
                    "client_ca_file": "empty",
                }
            },
            "push needs peer_sender",
        ),
        (
            {
                "simulator": {
                    "cert_file": "empty",
                    "key_file": "empty",
                    "push": {"cert_file": "empty", "key_file": "empty", "ca_file": "empty"},
                }
            },
            "simulator.push needs push",
        ),
        (
            {"signing": {"key_file": "nokey.pem", "key_id": "k", "trust_file": "empty"}},
            "signing: .*nokey.pem: cannot read private key",
        ),
        (
            {"signing": {"key_file": "empty", "key_id": ""}},
            "key_id|trust_file",
        ),
    ],
)
def test_bad_options_say_why(tmp_path: Path, raw: dict[str, object], why: str) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match=why):
        CemsOptions.model_validate(raw, context={"base_dir": tmp_path})


def test_a_cems_on_a_serial_line_is_refused(tmp_path: Path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "devices:\n"
        "  - id: cems1\n"
        "    protocol: cems\n"
        "    connection: {serial: {port: /dev/ttyS0}}\n"
        "    points: [{id: p, address: '/a#/p', unit: KiloW}]\n"
    )
    with pytest.raises(ConfigError, match=r"device 'cems1'.*a CEMS is reached over HTTPS"):
        load_mappings([mapping])
