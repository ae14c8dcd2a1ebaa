"""Blocking libiec61850 client calls that release the GIL while they wait.

The worker takes reports on the association it sends requests on (one association per
IED). The library runs the report handler on the association's receive thread, and that
handler needs the GIL; a blocking request that held the GIL while a report came in would
wait for a response the blocked receive thread never delivers (measured: the worker hung
for good). So every blocking request on a reporting association must release the GIL:

- the bindings release it in `pyWrap_IedConnection_readObject`, `..._writeObject`,
  `..._getRCBValues` and `..._setRCBValues`, used as they are;
- for the data set read, select, operate and the release of the association this module
  calls the same shared library through ctypes, which releases the GIL for the length of a
  foreign call. Pointers pass as the addresses of the bindings' objects; a data set's
  values come back as a bindings object by way of a one-element array that owns them.

Linux only, like the product: the library the bindings loaded (the wheel renames it) is
found in this process's memory maps.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyiec61850.pyiec61850 as iec

_P = ctypes.c_void_p


def _loaded_library() -> ctypes.CDLL:
    with open("/proc/self/maps", encoding="utf-8") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and os.path.basename(fields[5].strip()).startswith("libiec61850"):
                return ctypes.CDLL(fields[5].strip())
    raise ImportError("libiec61850 is not loaded in this process (pyiec61850 bindings missing?)")


_lib = _loaded_library()
_lib.ControlObjectClient_select.argtypes = [_P]
_lib.ControlObjectClient_select.restype = ctypes.c_bool
_lib.ControlObjectClient_selectWithValue.argtypes = [_P, _P]
_lib.ControlObjectClient_selectWithValue.restype = ctypes.c_bool
_lib.ControlObjectClient_operate.argtypes = [_P, _P, ctypes.c_uint64]
_lib.ControlObjectClient_operate.restype = ctypes.c_bool
_lib.MmsConnection_readNamedVariableListValues.argtypes = [
    _P,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_bool,
]
_lib.MmsConnection_readNamedVariableListValues.restype = _P
_lib.MmsValue_setElement.argtypes = [_P, ctypes.c_int, _P]
_lib.MmsValue_setElement.restype = None
_lib.IedConnection_close.argtypes = [_P]
_lib.IedConnection_close.restype = None


def _address(obj: Any) -> int:
    """The C pointer a bindings object wraps."""
    return int(obj)


def select(client: Any) -> bool:
    return bool(_lib.ControlObjectClient_select(_address(client)))


def select_with_value(client: Any, value: Any) -> bool:
    return bool(_lib.ControlObjectClient_selectWithValue(_address(client), _address(value)))


def operate(client: Any, value: Any, oper_time_ms: int = 0) -> bool:
    return bool(_lib.ControlObjectClient_operate(_address(client), _address(value), oper_time_ms))


def close(connection: Any) -> None:
    """Release the association (a request and its answer)."""
    _lib.IedConnection_close(_address(connection))


@contextmanager
def data_set_values(mms_connection: Any, domain: str, item: str) -> Iterator[tuple[Any, int]]:
    """A named variable list's values (a bindings MmsValue, or None) and the MmsError
    code; the values are freed when the block ends."""
    error = ctypes.c_int(0)
    pointer = _lib.MmsConnection_readNamedVariableListValues(
        _address(mms_connection), ctypes.byref(error), domain.encode(), item.encode(), False
    )
    if not pointer:
        yield None, error.value
        return
    holder = iec.MmsValue_createEmptyArray(1)
    _lib.MmsValue_setElement(_address(holder), 0, pointer)  # the holder owns the values now
    try:
        yield iec.MmsValue_getElement(holder, 0), error.value
    finally:
        iec.MmsValue_delete(holder)


__all__ = ["close", "data_set_values", "operate", "select", "select_with_value"]
