"""The Smart API messages of one CEMS link, in the CEMS's profile and, where it asks for
it, signed: one place for the gateway's side (requests out, answers and notifications in)
and the simulator's (the mirror image).

Nothing here is a codec of its own. A message is built as the gateway's model, written by
`gateway.smartapi.encode`, rewritten for a 1.1 peer by `interop.to_v11` and sealed by the
security profile (`OutboundSecurity`: the 1.1 multipart scheme for a 1.1 peer, the secure
profile's proof for a modern one). Inbound goes through `InboundSecurity.open` (signature
against the trust file, the 1.1 envelope read in the peer's profile) and the shared decoder.
A message from any sender but the expected one is refused: a signature binds a key to a
sender, the sender check binds the sender to this link.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.cems.protocol import CemsOptions, SmartApiSigning
from gateway.errors import UntrustedSigner
from gateway.smartapi import codec
from gateway.smartapi.codec import Format
from gateway.smartapi.decode import decode_graph
from gateway.smartapi.encode import AnyMessage, to_tree
from gateway.smartapi.interop import to_v11
from gateway.smartapi.peers import MODERN, PeerProfile, Profiles
from gateway.smartapi.security.keys import Identity, TrustStore
from gateway.smartapi.security.profile import InboundSecurity, OutboundSecurity
from gateway.smartapi.security.replay import ReplayGuard


@dataclass(frozen=True)
class _OnePeer(Profiles):
    """A CEMS link has one peer: its profile applies whatever the message says its sender
    is (the sender is checked after decoding)."""

    profile: PeerProfile = field(default=MODERN)

    def of(self, sender: str | None) -> PeerProfile:
        return self.profile


class SmartApiLink:
    """Encode our messages for the peer, decode the peer's: `peer` is the profile the other
    side speaks, `expected` its sender IRI (None: any). With `replay`, a message id seen
    before or a generatedAt outside its window is refused (the push endpoint: a
    notification stands alone; an answer is matched to its request instead)."""

    def __init__(
        self,
        peer: PeerProfile,
        expected: str | None,
        keys: tuple[Identity, TrustStore] | None,
        require_signature: bool = False,
        replay: ReplayGuard | None = None,
    ) -> None:
        self.peer = peer
        self.expected = expected
        identity, trust = keys if keys is not None else (None, TrustStore())
        self._sealer = OutboundSecurity(identity) if identity is not None else None
        self._inbound = InboundSecurity(
            trust=trust,
            identity=identity,
            require_signature=keys is not None and require_signature,
            replay=replay,
            accept_legacy=peer.legacy,
            profiles=_OnePeer(profile=peer),
        )

    def encode(self, message: AnyMessage) -> tuple[bytes, str]:
        """Body and Content-Type of `message` in the peer's profile, signed when we sign."""
        roots = to_tree(message)
        if self.peer.legacy:
            roots = to_v11(roots)
            if self._sealer is not None:
                return self._sealer.seal_v11(roots, "", encrypt=False)
        elif self._sealer is not None:
            roots = self._sealer.seal(roots)
        return codec.serialize(roots, Format.TURTLE), Format.TURTLE.value

    def decode(self, body: bytes, content_type: str | None) -> AnyMessage:
        """The peer's message, its signature verified (SecurityError) and its sender the
        expected one (UntrustedSigner); other SmartApiErrors say what does not decode."""
        graph = self._inbound.open(body, content_type)
        message = decode_graph(codec.prepare(graph))
        if self.expected is not None and message.sender != self.expected:
            raise UntrustedSigner(
                f"message from {message.sender}, not from the CEMS {self.expected}"
            )
        return message


def gateway_link(options: CemsOptions, replay: ReplayGuard | None = None) -> SmartApiLink:
    """The gateway's side: it signs as `smartapi_sender` and expects `peer_sender`."""
    signing, sender = options.signing, options.smartapi_sender
    return _link(options, signing, sender, options.peer_sender, options.peer, replay)


def simulator_link(options: CemsOptions, sender: str) -> SmartApiLink:
    """The simulated CEMS's side: it signs as `sender`, expects the gateway, and reads the
    gateway's messages in the profile it speaks itself (a 1.1 CEMS reads 1.1 envelopes)."""
    signing = options.simulator.signing if options.simulator is not None else None
    return _link(options, signing, sender, options.smartapi_sender, options.peer)


def _link(
    options: CemsOptions,
    signing: SmartApiSigning | None,
    sender: str,
    expected: str | None,
    peer: PeerProfile,
    replay: ReplayGuard | None = None,
) -> SmartApiLink:
    if signing is None:
        return SmartApiLink(peer, expected, None, replay=replay)
    keys = options.keys(signing, sender, "signing")
    return SmartApiLink(peer, expected, keys, signing.require_signature, replay)
