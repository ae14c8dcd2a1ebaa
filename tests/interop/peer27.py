# -*- coding: utf-8 -*-
"""The published Smart API 1.1 library as a peer (Python 2.7; run by tests/interop/peer.py).

Reads one JSON command on stdin and prints one JSON answer on the last line of stdout (the
library prints its own lines, e.g. CONCEPTDETAILS, which the caller filters out).

Commands ("op"):
- "request": build a Read or Write request (optionally with a time series) with the
  library, optionally signed and/or encrypted the 1.1 way; answers body and content type.
- "parse": parse a message (Response, Notification, Error or Request) with the library,
  verify 1.1 signatures, decrypt 1.1 parts; answers what the library read, field by field.
- "message": build a Response, Notification or Error with the library.
"""
from __future__ import print_function

import base64
import datetime
import json
import sys

from Crypto.PublicKey import RSA

RSA._RSAobj = RSA.RsaKey  # the library tests isinstance(key, RSA._RSAobj) (PyCrypto's name)

from rdflib import URIRef  # noqa: E402

from SmartAPI.common.HttpMessage import HttpMessage, parseMIMEmessage  # noqa: E402
from SmartAPI.common.RESOURCE import RESOURCE  # noqa: E402
from SmartAPI.common.SmartAPICrypto import SmartAPICrypto  # noqa: E402
from SmartAPI.common.Tools import Tools  # noqa: E402
from SmartAPI.factory.Factory import Factory  # noqa: E402
from SmartAPI.model.Activity import Activity  # noqa: E402
from SmartAPI.model.Device import Device  # noqa: E402
from SmartAPI.model.Error import Error  # noqa: E402
from SmartAPI.model.Evaluation import Evaluation  # noqa: E402
from SmartAPI.model.Notification import Notification  # noqa: E402
from SmartAPI.model.Request import Request  # noqa: E402
from SmartAPI.model.Response import Response  # noqa: E402
from SmartAPI.model.TemporalContext import TemporalContext  # noqa: E402
from SmartAPI.model.TimeSeries import TimeSeries  # noqa: E402
from SmartAPI.model.ValueObject import ValueObject  # noqa: E402
from SmartAPI.rdf.List import List  # noqa: E402
from SmartAPI.rdf.Variant import Variant  # noqa: E402

# rdflib names (the library labels their single-part bodies text/plain) or media types
FORMATS = {"turtle": "text/turtle", "json-ld": "json-ld", "nt": "nt"}


def _format(name):
    return FORMATS.get(name, name)


def _key(path):
    with open(path) as f:
        return RSA.importKey(f.read())


def _time(text):
    return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")


def _value_object(spec):
    vo = ValueObject(quantity=spec.get("quantity"), unit=spec.get("unit"))
    if spec.get("value") is not None:
        vo.setValue(spec["value"])
    if spec.get("instant"):
        vo.setInstant(_time(spec["instant"]))  # naive, as the library's own clock gives
    return vo


def _series(spec):
    ts = TimeSeries()
    ts.setQuantity(spec["quantity"])
    ts.setUnit(spec["unit"])
    ts.setTimeStep(spec["step"])
    start = _time(spec["start"])
    step = datetime.timedelta(seconds=spec["step_s"])
    ts.setTemporalContext(TemporalContext(start=start, end=start + step * len(spec["values"])))
    items = []
    for i, value in enumerate(spec["values"]):
        ev = Evaluation()
        ev.setValue(Variant(value))
        items.append(ev)
    ts.setList(items)
    return ts


def build_request(cmd):
    device = Device(cmd["entity"])
    values = [_value_object(v) for v in cmd.get("values", [])]
    series = _series(cmd["series"]) if cmd.get("series") else None
    encrypt_for = _key(cmd["encrypt_for"]) if cmd.get("encrypt_for") else None
    if cmd["method"] == "read":
        request = Factory.createRequest(
            encrypt_for, RESOURCE.READ, cmd["sender"], device, None, None, *values
        )
    else:
        request = Factory.createRequest(
            encrypt_for, RESOURCE.WRITE, cmd["sender"], device, None, series, *values
        )
    if cmd.get("id") is not None:
        request.setMessageId(cmd["id"])
    if cmd.get("generated_at"):
        request.setGeneratedAt(_time(cmd["generated_at"]))
    if cmd.get("sign_key"):
        for activity in request.getActivities():
            activity.sign(_key(cmd["sign_key"]))
    body, ctype = Tools.serializeMessage(request, _format(cmd.get("format", "turtle")))
    return {"body": base64.b64encode(body), "content_type": ctype}


def build_message(cmd):
    kind = cmd["kind"]
    msg = {"response": Response, "notification": Notification}.get(kind, Response)()
    msg.setGeneratedBy(str(cmd["sender"]))
    msg.setGeneratedAt(datetime.datetime.now())
    if cmd.get("id") is not None:
        msg.setMessageId(cmd["id"])
    if kind == "error":
        error = Error()
        error.setErrorCode(cmd["code"])
        error.setErrorMessage(cmd["message"])
        msg.addError(error)
    for act in cmd.get("activities", []):
        activity = Activity()
        activity.setMethod(RESOURCE.WRITE if act["method"] == "write" else RESOURCE.READ)
        device = Device(act["entity"])
        for v in act.get("values", []):
            device.addValueObject(_value_object(v))
        activity.addEntity(device)
        if act.get("series"):
            activity.addTimeSerie(_series(act["series"]))
        if cmd.get("sign_key"):
            activity.sign(_key(cmd["sign_key"]))
        msg.addActivity(activity)
    body, ctype = Tools.serializeMessage(msg, _format(cmd.get("format", "turtle")))
    return {"body": base64.b64encode(body), "content_type": ctype}


def _num(value):
    if isinstance(value, Variant):
        value = value.getValue()
    if isinstance(value, (int, long, float)):  # noqa: F821 (Python 2)
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None if value is None else str(value)


def _text(value):
    return None if value is None else unicode(value)  # noqa: F821 (Python 2)


def _iso(value):
    if isinstance(value, Variant):
        value = value.getValue()
    return None if value is None else value.isoformat()


def _vo(vo):
    return {
        "quantity": _text(vo.getQuantity()),
        "unit": _text(vo.getUnit()),
        "value": _num(vo.getValue()),
        "instant": _iso(vo.getInstant()) if vo.hasInstant() else None,
    }


def _ts(ts):
    items = ts.getList() if ts.hasList() else []
    if isinstance(items, List):
        items = items.get_items()
    values = []
    for item in items or []:
        if isinstance(item, Evaluation):
            values.append(_num(item.getValue()))
        else:
            values.append(_num(item))
    tc = ts.getTemporalContext()
    return {
        "iri": _text(ts.getIdentifierUri()) if ts.hasIdentifierUri() else None,
        "types": sorted(_text(t) for t in ts.getTypes()),
        "quantity": _text(ts.getQuantity()),
        "unit": _text(ts.getUnit()),
        "step": _text(ts.getTimeStep()),
        "start": _iso(tc.getStart()) if tc is not None and tc.hasStart() else None,
        "end": _iso(tc.getEnd()) if tc is not None and tc.hasEnd() else None,
        "values": values,
        "name": _text(ts.getName()) if ts.hasName() else None,
        "description": _text(ts.getDescription()) if ts.hasDescription() else None,
    }


def _activity(activity, decrypt_key):
    if activity.isOfType(RESOURCE.ENCRYPTEDREFERENCE) and decrypt_key is not None:
        activity = activity.decrypt(decrypt_key)
    return {
        "iri": _text(activity.getIdentifierUri()) if activity.hasIdentifierUri() else None,
        "method": _text(activity.getMethod()),
        "signature": activity.getSignature(),
        "hash": activity.getHashCode(),
        "entities": [
            {
                "iri": _text(e.getIdentifierUri()),
                "class": type(e).__name__,
                "types": sorted(_text(t) for t in e.getTypes()),
                "values": [_vo(v) for v in e.getValueObjects()],
            }
            for e in activity.getEntities()
        ],
        "series": [_ts(t) for t in activity.getTimeSeries()],
    }


def _integer_id(model, iri):
    """An Error is no Message to the library: its id is read from the graph."""
    from SmartAPI.common.PROPERTY import PROPERTY
    for value in model.objects(URIRef(iri), URIRef(PROPERTY.ID)):
        return value.toPython()
    return None


def parse(cmd):
    body = base64.b64decode(cmd["body"])
    ctype = cmd["content_type"]
    decrypt_key = _key(cmd["decrypt_key"]) if cmd.get("decrypt_key") else None
    verify_key = _key(cmd["verify_key"]) if cmd.get("verify_key") else None
    mime = parseMIMEmessage(body, content_type=ctype)
    parts = mime.getNonMainPartsAsDict() if isinstance(mime, HttpMessage) else {}
    main = mime.getMainPart()
    serialization = _format(cmd.get("format", "turtle"))
    Tools.messagePartsForParse = dict(parts)
    model = Tools().fromString(main, serialization)
    graph = model.graph
    kind = cmd["kind"]
    rtype = {
        "response": RESOURCE.RESPONSE,
        "notification": RESOURCE.NOTIFICATION,
        "request": RESOURCE.REQUEST,
        "error": RESOURCE.ERROR,
    }[kind]
    cls = {"response": Response, "notification": Notification, "request": Request,
           "error": Error}[kind]
    msg = cls.parse(Tools().getResourceByType(rtype, model))
    if kind == "error":
        return {
            "types": sorted(_text(t) for t in msg.getTypes()),
            "generated_by": _text(msg.getGeneratedBy().getIdentifierUri())
            if msg.hasGeneratedBy() else None,
            "generated_at": _iso(msg.getGeneratedAt()) if msg.hasGeneratedAt() else None,
            "code": msg.getErrorCode(),
            "message": _text(msg.getErrorMessage()),
            "id": _integer_id(graph, msg.getIdentifierUri()),
        }
    crypto = SmartAPICrypto()
    checks = []
    for activity in msg.getActivities():
        iri = _text(activity.getIdentifierUri()) if activity.hasIdentifierUri() else None
        if iri in parts:
            text = parts[iri]
            entry = {"iri": iri, "hash_ok": crypto.createEncodedMessageDigest(text)
                     == activity.getHashCode()}
            if verify_key is not None and activity.getSignature():
                entry["signature_ok"] = bool(
                    crypto.verifySignature(activity.getSignature(), verify_key, text)
                )
            checks.append(entry)
    out = {
        "types": sorted(_text(t) for t in msg.getTypes()),
        "id": msg.getMessageId(),
        "generated_by": _text(msg.getGeneratedBy().getIdentifierUri())
        if msg.hasGeneratedBy() else None,
        "generated_at": _iso(msg.getGeneratedAt()) if msg.hasGeneratedAt() else None,
        "activities": [_activity(a, decrypt_key) for a in msg.getActivities()],
        "errors": [
            {"code": e.getErrorCode(), "message": _text(e.getErrorMessage())}
            for e in msg.getErrors()
        ],
        "parts": sorted(parts),
        "checks": checks,
    }
    return out


def main():
    cmd = json.loads(sys.stdin.read())
    op = cmd["op"]
    if op == "request":
        answer = build_request(cmd)
    elif op == "message":
        answer = build_message(cmd)
    elif op == "parse":
        answer = parse(cmd)
    else:
        raise SystemExit("unknown op %r" % op)
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
