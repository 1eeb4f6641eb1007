"""The statistics file's JSON Schema (sim/schemas/stats.schema.json) and a validator for the
part of JSON Schema (draft 2020-12) that it uses: type, const, enum, properties, required,
additionalProperties, propertyNames, items, prefixItems, minItems, maxItems, minimum, maximum
and local $ref. Small on purpose, so that reading a statistics file (`acrn-sim plot`) needs no
other package; the tests check it against the `jsonschema` package on the same files."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "stats.schema.json"

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@cache
def stats_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def check_stats(doc: Any) -> list[str]:
    """Where `doc` departs from the statistics schema, one line each (empty: it conforms)."""
    schema = stats_schema()
    problems: list[str] = []
    _check(doc, schema, schema, "$", problems)
    return problems


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], at: str, out: list[str]) -> None:
    if len(out) >= 20:
        return
    if "$ref" in s:
        ref = s["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref: {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        _check(v, target, root, at, out)
    if "const" in s and v != s["const"]:
        out.append(f"{at}: {v!r:.40} is not {s['const']!r}")
        return
    if "enum" in s and v not in s["enum"]:
        out.append(f"{at}: {v!r:.40} is not one of {s['enum']}")
        return
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            out.append(f"{at}: {type(v).__name__} where {'/'.join(types)} is expected")
            return
    if _TYPES["number"](v):
        if "minimum" in s and v < s["minimum"]:
            out.append(f"{at}: {v} is below {s['minimum']}")
        if "maximum" in s and v > s["maximum"]:
            out.append(f"{at}: {v} is above {s['maximum']}")
    if isinstance(v, dict):
        props = s.get("properties", {})
        for key in s.get("required", []):
            if key not in v:
                out.append(f"{at}: no {key!r}")
        names = s.get("propertyNames")
        for key, value in v.items():
            if names is not None:
                if "pattern" in names and not re.search(names["pattern"], key):
                    out.append(f"{at}: key {key!r} does not match {names['pattern']}")
                if "enum" in names and key not in names["enum"]:
                    out.append(f"{at}: key {key!r} is not one of {names['enum']}")
            if key in props:
                _check(value, props[key], root, f"{at}.{key}", out)
            elif s.get("additionalProperties") is False:
                out.append(f"{at}: unexpected key {key!r}")
            elif isinstance(s.get("additionalProperties"), dict):
                _check(value, s["additionalProperties"], root, f"{at}.{key}", out)
    if isinstance(v, list):
        if "minItems" in s and len(v) < s["minItems"]:
            out.append(f"{at}: {len(v)} items, at least {s['minItems']}")
        if "maxItems" in s and len(v) > s["maxItems"]:
            out.append(f"{at}: {len(v)} items, at most {s['maxItems']}")
        prefix = s.get("prefixItems", [])
        for i, item in enumerate(v):
            sub = prefix[i] if i < len(prefix) else s.get("items")
            if isinstance(sub, dict):
                _check(item, sub, root, f"{at}[{i}]", out)
