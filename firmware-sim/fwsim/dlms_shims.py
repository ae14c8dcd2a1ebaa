"""Work-arounds for defects in the server side of gurux-dlms 1.0.203, all in one place.

The client side of gurux-dlms works as shipped; its server side (used only by the meter
simulator) does not. Each shim below names the defect it covers. Class-level patches only
add what is missing or fix a call that always fails; `install()` applies them once and is
idempotent. Remove a shim when the library fixes its defect.

Not covered, and therefore not served by the simulator: GET with block transfer (the
server's next-block path calls `settings.gbtWndowSize`/`getMaxPduSize`, which do not
exist, and then builds an invalid PDU). The simulator negotiates the largest PDU (65535)
and the gateway reads load profiles in windows, so answers fit one PDU.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from gurux_dlms import GXByteBuffer, GXServerReply
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.enums import Authentication, DataType, InterfaceType
from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters
from gurux_dlms.GXDLMSSettings import GXDLMSSettings
from gurux_dlms.GXSecure import GXSecure
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import (
    GXDLMSAssociationLogicalName,
    GXDLMSDemandRegister,
    GXDLMSExtendedRegister,
    GXDLMSObjectCollection,
    GXDLMSRegister,
)
from gurux_dlms.objects.enums import AssociationStatus
from gurux_dlms.secure import GXDLMSSecureServer
from gurux_dlms.ValueEventArgs import ValueEventArgs

from drivers.dlms.session import quiet_gurux

_installed = False


def install() -> None:
    """Apply the class-level patches (once per process)."""
    global _installed  # the patches are process-wide by nature; this only guards repeats
    if _installed:
        return
    _installed = True

    # Defect: GXDLMSLNCommandHandler calls p.isMultipleBlocks() and p.setStatus() on
    # GXDLMSLNParameters, which has neither (every SET request fails).
    if not hasattr(GXDLMSLNParameters, "isMultipleBlocks"):
        GXDLMSLNParameters.isMultipleBlocks = lambda self: self.multipleBlocks
    if not hasattr(GXDLMSLNParameters, "setStatus"):
        GXDLMSLNParameters.setStatus = lambda self, value: setattr(self, "status", value)

    # Defect: the SET and ACTION handlers call list(e) on a ValueEventArgs, which is not
    # iterable (every SET and ACTION request fails).
    if not hasattr(ValueEventArgs, "__iter__"):
        ValueEventArgs.__iter__ = lambda self: iter([self])

    # Defect: the association's object list (attribute 2, read by discovery) checks
    # e.isSkipMaxPduSize, which ValueEventArgs lacks (every object list read fails).
    if not hasattr(ValueEventArgs, "isSkipMaxPduSize"):
        ValueEventArgs.isSkipMaxPduSize = False

    # Defect: after HLS pass 3 the ACTION handler calls settings.setConnected(), which
    # GXDLMSSettings lacks (an HLS association is never marked connected).
    if not hasattr(GXDLMSSettings, "setConnected"):
        GXDLMSSettings.setConnected = lambda self, value: setattr(self, "connected", value)

    # Defect: GXDLMS.handleGloDedRequest builds AesGcmParameter(title, key, key) without
    # the leading tag argument, so every shifted argument lands in the wrong field and no
    # ciphered request decrypts. The replacement accepts both call forms.
    module: Any = importlib.import_module("gurux_dlms.GXDLMS")
    if module.AesGcmParameter is AesGcmParameter:
        module.AesGcmParameter = _TaggedAesGcmParameter

    # Defect: GXDLMSChippering print()s "Encryption is applied." to stdout for every
    # ciphered message; stdout of the simulator carries its ready line to the parent,
    # and an unread pipe would stall the simulator. The client has the same defect; the
    # one fix lives with the driver.
    quiet_gurux()


class _TaggedAesGcmParameter(AesGcmParameter):  # type: ignore[misc]
    def __init__(self, tag: Any = 0, *args: Any) -> None:
        if not isinstance(tag, int):  # called without the tag: shift the arguments
            args = (tag, *args)
            tag = 0
        super().__init__(tag, *args)


class ServerReply(GXServerReply):  # type: ignore[misc]
    """Defect: GXDLMSServer.handleRequest calls sr.setReply(), sr.getConnectionInfo(),
    sr.getCount() and sr.setCount(), none of which GXServerReply has."""

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def getCount(self) -> int:
        return int(self.count)

    def setCount(self, value: int) -> None:
        self.count = value


class AareSafeBuffer(GXByteBuffer):  # type: ignore[misc]
    """Defect: _GXAPDU.generateAARE writes the responding AP title (HLS-GMAC, ciphered
    contexts) as `A4 len 04` followed by setUInt8() without an argument, which raises,
    and it gives the title's length where the TLV needs length + 2. Used as the server's
    reply buffer, this buffer completes the TLV as `A4 len+2 04 len title`."""

    def setUInt8(self, item: Any = None, index: Any = None) -> None:
        if item is None and index is None:
            title_length = self._data[self.size - 2]
            super().setUInt8(title_length + 2, self.size - 2)
            item = title_length
        super().setUInt8(item, index)


class AssociationLN(GXDLMSAssociationLogicalName):  # type: ignore[misc]
    """Defects: for HLS-GMAC, invoke() (reply_to_HLS_authentication) calls int() on the
    client's octet-string answer and always fails; and the ACTION handler then calls
    getAssociationStatus(), which the class lacks. The HLS-GMAC check is done here:
    the client's f(StoC) must be the GMAC of our challenge under its invocation counter
    and system title; the answer is f(CtoS) under ours."""

    def getAssociationStatus(self) -> Any:
        return self.associationStatus

    def invoke(self, settings: Any, e: Any) -> Any:
        if e.index != 1 or settings.authentication != Authentication.HIGH_GMAC:
            return super().invoke(settings, e)
        answer = bytes(e.parameters or b"")
        if len(answer) < 5:
            self.associationStatus = AssociationStatus.NON_ASSOCIATED
            return None
        counter = int.from_bytes(answer[1:5], "big")
        expected = GXSecure.secure(
            settings, settings.cipher, counter, settings.stoCChallenge, settings.sourceSystemTitle
        )
        if bytes(expected) != answer:
            self.associationStatus = AssociationStatus.NON_ASSOCIATED
            return None
        self.associationStatus = AssociationStatus.ASSOCIATED
        return GXSecure.secure(
            settings,
            settings.cipher,
            settings.cipher.invocationCounter,
            settings.ctoSChallenge,
            settings.cipher.systemTitle,
        )


class _ExactScaler:
    """Defect: the registers keep the scaler as a multiplier (10**s) and encode it as
    floor(log10(multiplier)), which is one too small for some exponents (1000 -> 2).
    These classes keep the exponent and encode scaler_unit from it."""

    scaler_unit_index = 3
    exponent = 0

    def set_scaler(self, exponent: int, unit: int) -> None:
        self.exponent = exponent
        self.scaler = math.pow(10, exponent)
        self.unit = unit

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index != self.scaler_unit_index:
            return super().getValue(settings, e)  # type: ignore[misc]
        data = GXByteBuffer()
        data.setUInt8(DataType.STRUCTURE)
        data.setUInt8(2)
        _GXCommon.setData(settings, data, DataType.INT8, self.exponent)
        _GXCommon.setData(settings, data, DataType.ENUM, int(self.unit))
        return data.array()


class Register(_ExactScaler, GXDLMSRegister):  # type: ignore[misc]
    pass


class ExtendedRegister(_ExactScaler, GXDLMSExtendedRegister):  # type: ignore[misc]
    pass


class DemandRegister(_ExactScaler, GXDLMSDemandRegister):  # type: ignore[misc]
    scaler_unit_index = 4


class ShimmedServer(GXDLMSSecureServer):  # type: ignore[misc]
    """A logical-name WRAPPER server with what GXDLMSServer calls but does not define.

    Defects covered: the request handlers call notifyRead(), notifyConnected(),
    getTransaction()/setTransaction() and onPostRead() without arguments; GXDLMSServer
    defines none of them (onPostRead only with an argument). GXDLMSSecureServer stores
    its ciphering as settings.ciphering while everything reads settings.cipher. And
    initialize() appends the whole object collection as one element of the association's
    object list (GXDLMSObjectCollection.extend wants a collection): the list is filled
    here first. Note also that onPreRead is not called for a plain GET; the handler
    calls onGetAttributeAccess(e) with the request's event args instead, which is where
    subclasses answer selective access themselves.
    """

    def __init__(self, association: AssociationLN, objects: list[Any]) -> None:
        install()
        super().__init__(True, InterfaceType.WRAPPER)
        self.settings.cipher = None
        self.items.append(association)
        for obj in objects:
            self.items.append(obj)
        listed = GXDLMSObjectCollection()
        for obj in self.items:
            listed.append(obj)
        association.objectList.extend(listed)
        self.initialize()
        self.replyData = AareSafeBuffer()

    def notifyRead(self) -> None:
        return None

    def notifyConnected(self, connection_info: Any) -> None:
        self.onConnected(connection_info)

    def getTransaction(self) -> Any:
        return self.transaction

    def setTransaction(self, value: Any) -> None:
        self.transaction = value

    def onPostRead(self, args: Any = None) -> None:
        return None

    def answer(self, request: bytes) -> bytes | None:
        """Handle one received WRAPPER frame; the reply frame, if any."""
        reply = ServerReply(bytearray(request))
        self.handleRequest(reply)
        return bytes(reply.reply) if reply.reply else None
