"""Reading a meter's self-description for discovery: the association's object list
(Association LN attribute 2) and, per object, what a mapping needs: registers' scaler and
unit, profiles' capture objects, the limiter's monitored value, the disconnector's control
mode. GET requests only: discovery never writes to a meter. Blocking (one association):
run it in a thread."""

from __future__ import annotations

import math
from dataclasses import replace

from gurux_dlms.objects import GXDLMSObject

from drivers.dlms.session import Refused, Session
from gateway.discover.dlms import Found
from gateway.errors import DecodeError, DeviceRejected
from gateway.protocols.dlms import DlmsOptions, Obis

#: class id -> the attribute holding scaler_unit
_SCALER_UNIT = {3: 3, 4: 3, 5: 4}


class ObjectListSession(Session):
    def object_list(self) -> list[GXDLMSObject]:
        # getObjectsRequest returns one frame, not a list of frames
        reply = self._exchange([self._client.getObjectsRequest()])
        if reply.error:
            raise DeviceRejected(self.device, f"object list refused: {Refused(reply.error).text}")
        try:
            return list(self._client.parseObjects(reply.data, True))
        except Exception as exc:  # gurux raises any type for a bad object list  # noqa: BLE001
            raise DecodeError(self.device, f"object list did not decode: {exc}") from None

    def _read_into(self, obj: GXDLMSObject, attribute: int) -> str | None:
        """Read one attribute into the gurux object; why not, or None."""
        reply = self._exchange(self._client.read(obj, attribute))
        if reply.error:
            return f"attribute {attribute}: {Refused(reply.error).text}"
        try:
            self._client.updateValue(obj, attribute, reply.value)
        except Exception as exc:  # gurux raises any type for a bad value  # noqa: BLE001
            return f"attribute {attribute} did not decode: {exc}"
        return None

    def describe(self) -> list[Found]:
        out = []
        for obj in self.object_list():
            class_id, obis = int(obj.objectType), str(Obis.parse(obj.logicalName))
            base = Found(class_id, obis)
            if class_id in _SCALER_UNIT:
                problem = self._read_into(obj, _SCALER_UNIT[class_id])
                if problem is not None:
                    out.append(replace(base, problem=problem))
                    continue
                # gurux keeps the scaler as a multiplier (10**s)
                scaler = round(math.log10(obj.scaler)) if obj.scaler else 0
                out.append(replace(base, scaler=scaler, unit=int(obj.unit)))
            elif class_id == 7:
                try:
                    columns = self.capture_objects(Obis.parse(obis))
                except DeviceRejected as exc:
                    out.append(replace(base, problem=str(exc)))
                    continue
                capture = tuple((c.class_id, str(c.obis), c.attribute) for c in columns)
                out.append(replace(base, capture=capture))
            elif class_id == 71:
                problem = self._read_into(obj, 2)
                value = obj.monitoredValue
                monitored = None
                if problem is None and value is not None:
                    monitored = (
                        int(value.objectType),
                        str(Obis.parse(value.logicalName)),
                        int(obj.monitoredAttributeIndex),
                    )
                out.append(replace(base, monitored=monitored, problem=problem))
            elif class_id == 70:
                problem = self._read_into(obj, 4)
                mode = None if problem is not None else int(obj.controlMode)
                out.append(replace(base, control_mode=mode, problem=problem))
            else:
                out.append(base)
        return out


def describe_meter(host: str, port: int, options: DlmsOptions, timeout: float) -> list[Found]:
    """Associate, read the object list and what each object needs, release."""
    session = ObjectListSession(f"{host}:{port}", host, port, options, timeout)
    session.open()
    try:
        return session.describe()
    finally:
        session.close()
