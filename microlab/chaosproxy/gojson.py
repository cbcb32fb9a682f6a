"""JSON the way Toxiproxy's Go server reads and writes it.

Clients see Go's `encoding/json` rules through the API, so we reproduce the visible ones:

- only the first JSON value of a body is read; anything after it is ignored;
- object keys match struct fields case-insensitively, the last duplicate wins, unknown keys
  are ignored and `null` leaves a field unchanged;
- integer fields accept only integer literals (`100.0`, `1e3` and `"100"` are errors) and
  `float32` fields round to single precision;
- error messages follow Go's wording (`unexpected EOF`, `json: cannot unmarshal string into Go
  struct field Proxy.enabled of type bool`, ...);
- output is compact, with `<`, `>` and `&` escaped, and float32 numbers in their shortest form.
"""

from __future__ import annotations

import json
import re
import struct
from decimal import Decimal
from typing import Any

_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class GoJsonError(ValueError):
    """A decode error, worded as Go words it."""


class Number:
    """A JSON number kept as its literal text, so errors can quote it as Go does."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


class Float32(float):
    """A float that serialises in float32's shortest form (`0.1`, not `0.10000000149011612`)."""


def to_float32(value: float) -> Float32:
    """Round to single precision; raises OverflowError beyond float32's range."""
    return Float32(struct.unpack("f", struct.pack("f", value))[0])


def decode_first_value(body: bytes) -> Any:
    """Decode the first JSON value in `body`, ignoring what follows, like `json.Decoder.Decode`."""
    text = body.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise GoJsonError("EOF")
    decoder = json.JSONDecoder(
        parse_int=Number, parse_float=Number, parse_constant=_reject_constant
    )
    try:
        value, _ = decoder.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise GoJsonError(_syntax_message(text, error)) from None
    except _ConstantError as error:
        raise GoJsonError(f"invalid character '{error.char}' looking for beginning of value") from None
    return value


class _ConstantError(Exception):
    def __init__(self, char: str) -> None:
        self.char = char


def _reject_constant(name: str) -> Any:
    # Python accepts NaN and Infinity; Go's scanner stops at their first letter.
    raise _ConstantError(name.lstrip("-")[0])


def _syntax_message(text: str, error: json.JSONDecodeError) -> str:
    if error.pos >= len(text) or error.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = _quote_char(text[error.pos])
    if error.msg.startswith("Invalid control character"):
        return f"invalid character {char} in string literal"
    if error.msg.startswith("Invalid \\escape"):
        return f"invalid character {_quote_char(text[error.pos + 1])} in string escape code"
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if error.msg.startswith("Expecting ':'"):
        return f"invalid character {char} after object key"
    if error.msg.startswith("Expecting ','"):
        where = "object key:value pair" if _innermost(text, error.pos) == "{" else "array element"
        return f"invalid character {char} after {where}"
    return f"invalid character {char} looking for beginning of value"


def _innermost(text: str, pos: int) -> str:
    """The bracket (`{` or `[`) enclosing `pos`, found by a string-aware scan."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _quote_char(char: str) -> str:
    if char in "'\"":
        return "'\\''" if char == "'" else "'\"'"
    return "'" + json.dumps(char, ensure_ascii=False)[1:-1] + "'"


def kind_of(value: Any) -> str:
    """Go's name for a JSON value's kind, as used in unmarshal errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Number):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def decode_fields(
    obj: Any, go_struct: str, fields: dict[str, str], go_type: str, path: str = ""
) -> dict[str, Any]:
    """Read the `fields` (JSON name → Go type) of one JSON object into Python values.

    Returns only the fields present and not null, keyed by their canonical names. `go_struct`
    and `path` are what Go prints in a type error; `go_type` is the whole value's Go type, used
    when `obj` is not an object at all. A `null` object yields no fields.
    """
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise GoJsonError(f"json: cannot unmarshal {kind_of(obj)} into Go value of type {go_type}")
    by_folded = {name.lower(): name for name in fields}
    result: dict[str, Any] = {}
    for key, value in obj.items():
        name = key if key in fields else by_folded.get(key.lower())
        if name is None or value is None:
            continue
        result[name] = convert(value, fields[name], f"{go_struct}.{path}{name}")
    return result


def convert(value: Any, go_type: str, field: str) -> Any:
    """Convert one non-null JSON value to a Go-typed field value, or raise Go's error."""

    def mismatch(what: str) -> GoJsonError:
        return GoJsonError(f"json: cannot unmarshal {what} into Go struct field {field} of type {go_type}")

    if go_type == "string":
        if not isinstance(value, str):
            raise mismatch(kind_of(value))
        return value
    if go_type == "bool":
        if not isinstance(value, bool):
            raise mismatch(kind_of(value))
        return value
    if go_type in ("int", "int64"):
        if not isinstance(value, Number):
            raise mismatch(kind_of(value))
        if not _INTEGER.match(value.literal) or not _INT64_MIN <= int(value.literal) <= _INT64_MAX:
            raise mismatch(f"number {value.literal}")
        return int(value.literal)
    if go_type == "float32":
        if not isinstance(value, Number):
            raise mismatch(kind_of(value))
        try:
            return to_float32(float(value.literal))
        except OverflowError:
            raise mismatch(f"number {value.literal}") from None
    if go_type.startswith("object:"):  # a Go struct we accept but do not read (Proxy.Logger)
        if not isinstance(value, dict):
            raise GoJsonError(
                f"json: cannot unmarshal {kind_of(value)} into Go struct field {field} "
                f"of type {go_type.removeprefix('object:')}"
            )
        return value
    raise ValueError(f"unsupported Go type {go_type}")


def encode(value: Any) -> bytes:
    """Compact JSON as Go's `json.Marshal` writes it (dict order is kept, so callers sort)."""
    return _encode(value).encode("utf-8")


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{_encode(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, Float32):
        return format_float32(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                             ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
            text = text.replace(char, escape)
        return text
    return json.dumps(value)  # bool, int, None


def format_float32(value: float) -> str:
    """Go's float32 JSON form: shortest round-trip digits, exponent only outside [1e-6, 1e21)."""
    if value == 0:
        return "-0" if str(value).startswith("-") else "0"
    target = to_float32(value)
    for precision in range(9):
        text = f"{value:.{precision}e}"
        if to_float32(float(text)) == target:
            break
    if to_float32(1e-6) <= abs(target) < to_float32(1e21):
        return format(Decimal(text).normalize(), "f")
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    sign, digits = exponent[0], exponent[1:].lstrip("0") or "0"
    return f"{mantissa}e{sign}{digits}"
