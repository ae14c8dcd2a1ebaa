"""The HTTPS sender's edge cases that need no AMS."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import DeliveryError
from gateway.north.client import HttpsSender
from gateway.north.outbox import OutboundMessage, QueuedMessage
from gateway.north.tls import client_context
from tests.support import north as support
from tests.support.pki import PkiFiles, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


async def test_a_delivery_while_the_sender_closes_is_a_delivery_error(
    pki: PkiFiles, tmp_path: Path
) -> None:
    """A retry that runs while the gateway stops finds the session closing: the outbox
    gets a DeliveryError (the message waits for the restart), not a RuntimeError that
    would fail the stop."""
    config = support.gateway_config(pki, ams_port=9)
    assert config.ams is not None
    item = QueuedMessage(OutboundMessage("m1", "forecast", "text/turtle", b"x"), 1, 0.0, 0)
    async with HttpsSender(config.ams, client_context(config.tls)) as sender:
        assert sender._session is not None
        await sender._session.close()  # what __aexit__ does first
        with pytest.raises(DeliveryError, match="not open"):
            await sender.deliver(item)
