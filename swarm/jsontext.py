"""Messages as JSON text: what `python -m swarm sub` prints and what the sidecar bridge speaks.

msgpack carries more than JSON: bytes (values and map keys) and tuples. Bytes become base64 text and
tuples lists; a message JSON cannot hold at all (NaN, say, on the bridge) is a ValueError.
"""

from __future__ import annotations

import base64
import json
from typing import Any

__all__ = ["dumps", "json_default"]


def json_default(value: Any) -> Any:
    """`json.dumps` hook: bytes become base64 strings, tuples and sets lists; anything else is an error."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_keys(value: Any) -> Any:
    """Make map keys JSON can carry (msgpack allows bytes keys); values are left to `json_default`."""
    if isinstance(value, dict):
        return {(json_default(key) if isinstance(key, (bytes, bytearray)) else key): _json_keys(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_keys(item) for item in value]
    return value


def dumps(message: Any, *, allow_nan: bool = True) -> str:
    """`message` as compact JSON text; raises ValueError for what JSON cannot carry."""
    options: dict[str, Any] = {"default": json_default, "ensure_ascii": False, "separators": (",", ":"),
                               "allow_nan": allow_nan}
    try:
        return json.dumps(message, **options)
    except TypeError:
        try:
            return json.dumps(_json_keys(message), **options)  # bytes or int keys: rewrite the keys
        except TypeError as error:
            raise ValueError(str(error)) from None
