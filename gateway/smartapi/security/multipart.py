"""multipart/related envelopes (RFC 2387) as the Smart API 1.1 legacy profile sends them:
`multipart/related; type="text/turtle"; start="Main"`, the main graph first, each signed or
encrypted object in its own part whose Content-ID is the object's IRI. Part bodies are kept
byte for byte: the legacy hashCode is computed over them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from gateway.errors import MessageParseError

CRLF = b"\r\n"


@dataclass(frozen=True)
class Part:
    content_id: str
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


def media_params(content_type: str) -> tuple[str, dict[str, str]]:
    """'multipart/related; type="text/turtle"; start=Main' -> base type and parameters."""
    base, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, sep, value = item.strip().partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"')
    return base.strip().lower(), params


def is_multipart(content_type: str | None) -> bool:
    return bool(content_type) and media_params(content_type or "")[0] == "multipart/related"


def _strip_id(value: str) -> str:
    value = value.strip()
    return value[1:-1] if value.startswith("<") and value.endswith(">") else value


def build(parts: list[Part], start: str = "Main") -> tuple[bytes, str]:
    """The body and its Content-Type; the first part must be the start part."""
    boundary = "mgms-" + os.urandom(12).hex()
    out: list[bytes] = []
    for part in parts:
        out.append(b"--" + boundary.encode() + CRLF)
        out.append(f"Content-Type: {part.content_type}".encode() + CRLF)
        out.append(f"Content-ID: {part.content_id}".encode() + CRLF)
        for name, value in part.headers:
            out.append(f"{name}: {value}".encode() + CRLF)
        out.append(CRLF + part.body + CRLF)
    out.append(b"--" + boundary.encode() + b"--" + CRLF)
    content_type = f'multipart/related; boundary="{boundary}"; type="text/turtle"; start="{start}"'
    return b"".join(out), content_type


def parse(body: bytes, content_type: str) -> tuple[Part, dict[str, Part]]:
    """The start part and all parts by Content-ID."""
    base, params = media_params(content_type)
    boundary = params.get("boundary")
    if base != "multipart/related" or not boundary:
        raise MessageParseError("multipart/related without boundary")
    delimiter = b"--" + boundary.encode()
    segments = body.split(delimiter)
    if len(segments) < 3 or not segments[-1].startswith(b"--"):
        raise MessageParseError("multipart body is not closed by its boundary")
    parts: dict[str, Part] = {}
    order: list[str] = []
    for segment in segments[1:-1]:
        if not segment.startswith(CRLF):
            raise MessageParseError("multipart delimiter not followed by CRLF")
        head, sep, content = segment[2:].partition(CRLF + CRLF)
        if not sep:
            raise MessageParseError("multipart part without header end")
        if not content.endswith(CRLF):
            raise MessageParseError("multipart part body not ended by CRLF")
        headers: list[tuple[str, str]] = []
        for line in head.split(CRLF) if head else []:
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise MessageParseError(f"bad multipart header line {line[:40]!r}")
            headers.append((name.strip(), value.strip()))
        found = {k.lower(): v for k, v in headers}
        cid = _strip_id(found.get("content-id", ""))
        if not cid or cid in parts:
            raise MessageParseError(f"multipart part with missing or repeated Content-ID {cid!r}")
        parts[cid] = Part(
            cid, found.get("content-type", "text/turtle"), content[:-2], tuple(headers)
        )
        order.append(cid)
    start = _strip_id(params.get("start", order[0] if order else ""))
    if start not in parts:
        raise MessageParseError(f"multipart start part {start!r} is missing")
    return parts[start], parts
