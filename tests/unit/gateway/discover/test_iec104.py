"""IEC 104 drafting: one point per object, commands only from the option, honest notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.discover import iec104
from gateway.discover.draft import render
from gateway.errors import DiscoveryError
from gateway.loader import check_files


def test_objects_commands_and_what_is_not_known(tmp_path: Path) -> None:
    seen = [
        iec104.Seen(1, 100, 13, 1.5, 20, False),
        iec104.Seen(1, 100, 36, 1.75, 3, True),  # its time-tagged twin, spontaneous
        iec104.Seen(1, 200, 15, 42, 37, False),
        iec104.Seen(2, 7, 21, 1, 20, False),  # M_ME_ND_1: no gateway type
    ]
    commands = iec104.parse_commands(["1/300/M_ME_NC_1+301/C_SE_NC_1", "1/400/C_SC_NA_1"])
    draft = iec104.draft_outstation(
        seen, commands, connection={"host": "h", "port": 2404}, origin="t", device_id="rtu"
    )
    points = {p.fields["address"]: p for p in draft.devices[0].points}
    assert set(points) == {
        "1/100/M_ME_NC_1",
        "1/200/M_IT_NA_1",
        "1/300/M_ME_NC_1+301/C_SE_NC_1",
        "1/400/C_SC_NA_1",
    }
    assert points["1/100/M_ME_NC_1"].found_as == (
        "M_ME_NC_1/M_ME_TF_1: interrogated by station (20), spontaneous (3); read 1.75"
    )
    assert points["1/400/C_SC_NA_1"].fields["direction"] == "write"
    assert "CA 2 IOA 7: type [21] not supported" in draft.unmapped
    assert any("its return information was not received" in u for u in draft.unmapped)
    assert any("commands cannot be discovered" in r for r in draft.remarks)
    path = tmp_path / "d.yaml"
    path.write_text(render(draft))
    assert check_files([path]) == []


def test_every_requested_common_address_must_send_something() -> None:
    seen = [iec104.Seen(1, 100, 13, 1.5, 1, False)]
    iec104.check_stations([1], seen)
    with pytest.raises(DiscoveryError, match=r"common address 7 \(CA 7: no\); .* sent: 1:"):
        iec104.check_stations([1, 7], seen, ["CA 7: no"])
    with pytest.raises(DiscoveryError, match=r"common address 1 .* sent: none"):
        iec104.check_stations([1], [])


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("1/100/C_SC_NA_1", r"--command '1/100/C_SC_NA_1': IOA 100 of CA 1 was received as"),
        (
            "1/100/M_ME_NB_1+101/C_SE_NB_1",
            r"return information 1/100 was received as M_ME_NC_1, not M_ME_NB_1",
        ),
    ],
)
def test_commands_that_contradict_what_was_received_are_named(command: str, expected: str) -> None:
    seen = [iec104.Seen(1, 100, 13, 1.5, 20, False)]  # M_ME_NC_1
    with pytest.raises(DiscoveryError, match=expected):
        iec104.check_commands(seen, iec104.parse_commands([command]))
    # the return information as received, or not received at all: drafted
    iec104.check_commands(seen, iec104.parse_commands(["1/100/M_ME_NC_1+101/C_SE_NC_1"]))
    iec104.check_commands(seen, iec104.parse_commands(["1/7/M_SP_NA_1+8/C_SC_NA_1"]))
