"""A fast, *sound* pre-check of documents against the catalog's JSON Schemas.

``jsonschema`` costs ~1 ms per catalog record, which would dominate batched registration (100k
records = 100 s). This module compiles the small keyword subset the ``catalog-*`` schemas use into
one plain Python function per schema (a few µs per record). It is sound, not complete: ``True``
guarantees the document is valid under the schema; ``False`` means "not proven", and the caller
then runs the real validator (:func:`atlasstore.io.schemas.validate`), which either accepts the
document or raises with the precise JSON path. So the behaviour is exactly jsonschema's; only the
common case is fast. A schema using any keyword outside the subset compiles to "always ask
jsonschema".

The generated code only contains variable names and indices into a constants list: values from
the schema (property names, enum members, patterns, bounds) are never pasted into the source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from atlasstore.io.schemas import load_schema

Check = Callable[[Any], bool]

_IGNORED = {"$schema", "$id", "title", "description", "$comment", "examples", "default"}
_TYPE_COND = {  # sound (possibly stricter than JSON Schema, e.g. 1.0 is not taken as an integer)
    "string": "type({v}) is str",
    "integer": "type({v}) is int",
    "number": "(type({v}) is int or (type({v}) is float and not isnan({v})))",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
    "boolean": "type({v}) is bool",
    "null": "{v} is None",
}


class _Unsupported(Exception):
    pass


class _Gen:
    def __init__(self) -> None:
        self.consts: list[Any] = []
        self.funcs: list[str] = []
        self.n = 0

    def const(self, value: Any) -> str:
        self.consts.append(value)
        return f"C[{len(self.consts) - 1}]"

    def var(self) -> str:
        self.n += 1
        return f"v{self.n}"

    def function(self, schema: Any) -> str:
        """Compile ``schema`` into a function returning a bool; returns its name."""
        name = f"f{len(self.funcs)}"
        self.funcs.append("")  # reserve the slot (sub-functions may be added meanwhile)
        body = self.block(schema, "x", 1)
        self.funcs[int(name[1:])] = "\n".join([f"def {name}(x):", *body, "    return True"])
        return name

    def block(self, schema: Any, v: str, ind: int) -> list[str]:
        """Lines that ``return False`` when ``v`` fails ``schema``."""
        pad = "    " * ind
        if schema is True or schema == {}:
            return []
        if schema is False:
            return [f"{pad}return False"]
        if not isinstance(schema, dict):
            raise _Unsupported(repr(schema))
        out: list[str] = []
        for kw, val in schema.items():
            if kw in _IGNORED:
                continue
            if kw == "type":
                types = [val] if isinstance(val, str) else list(val)
                if any(t not in _TYPE_COND for t in types):
                    raise _Unsupported(f"type {val!r}")
                cond = " or ".join(_TYPE_COND[t].format(v=v) for t in types)
                out.append(f"{pad}if not ({cond}): return False")
            elif kw == "enum":
                conds = [f"(type({v}) is {self.const(type(e))} and {v} == {self.const(e)})"
                         for e in val]
                out.append(f"{pad}if not ({' or '.join(conds) or 'False'}): return False")
            elif kw == "anyOf":
                names = [self.function(s) for s in val]
                out.append(f"{pad}if not ({' or '.join(f'{n}({v})' for n in names)}): return False")
            elif kw == "properties":
                out.append(f"{pad}if type({v}) is dict:")
                inner = [f"{pad}    pass"]
                for key, sub in val.items():
                    k, w = self.const(key), self.var()
                    lines = self.block(sub, w, ind + 2)
                    if lines:
                        inner += [f"{pad}    if {k} in {v}:", f"{pad}        {w} = {v}[{k}]", *lines]
                out += inner
            elif kw == "required":
                ks = self.const(frozenset(val))
                out.append(f"{pad}if type({v}) is dict and not ({ks} <= {v}.keys()): return False")
            elif kw == "additionalProperties":
                known = self.const(frozenset(schema.get("properties", {})))
                if val is False:
                    out.append(f"{pad}if type({v}) is dict and not ({v}.keys() <= {known}): "
                               "return False")
                else:
                    w, kk = self.var(), self.var()
                    lines = self.block(val, w, ind + 3)
                    if lines:
                        out += [f"{pad}if type({v}) is dict:",
                                f"{pad}    for {kk}, {w} in {v}.items():",
                                f"{pad}        if {kk} not in {known}:", *lines]
            elif kw == "items":
                w = self.var()
                lines = self.block(val, w, ind + 2)
                if lines:
                    out += [f"{pad}if type({v}) is list:", f"{pad}    for {w} in {v}:", *lines]
            elif kw in ("minItems", "maxItems"):
                op = ">=" if kw == "minItems" else "<="
                out.append(f"{pad}if type({v}) is list and not (len({v}) {op} {self.const(val)}): "
                           "return False")
            elif kw == "uniqueItems":
                if val:  # scalars of one kind only; anything else is "not proven"
                    out.append(f"{pad}if type({v}) is list and not (all(type(i) is int or "
                               f"type(i) is str for i in {v}) and "
                               f"len({{(type(i), i) for i in {v}}}) == len({v})): return False")
            elif kw in ("minLength", "maxLength"):
                op = ">=" if kw == "minLength" else "<="
                out.append(f"{pad}if type({v}) is str and not (len({v}) {op} {self.const(val)}): "
                           "return False")
            elif kw == "pattern":
                rx = self.const(re.compile(val))
                out.append(f"{pad}if type({v}) is str and {rx}.search({v}) is None: return False")
            elif kw in ("minimum", "maximum"):
                op = ">=" if kw == "minimum" else "<="
                out.append(f"{pad}if (type({v}) is int or type({v}) is float) and "
                           f"not ({v} {op} {self.const(val)}): return False")
            else:
                raise _Unsupported(kw)
        return out


def compile_schema(schema: Any) -> Check:
    """Compile a schema (the supported subset) into a sound checker; raises _Unsupported."""
    g = _Gen()
    entry = g.function(schema)
    namespace: dict[str, Any] = {"C": g.consts, "isnan": math.isnan}
    exec("\n\n".join(g.funcs), namespace)
    return namespace[entry]


@cache
def checker(name: str) -> Check:
    """The compiled pre-check of schema ``name`` (always False for unsupported schemas)."""
    try:
        return compile_schema(load_schema(name))
    except _Unsupported:
        return lambda x: False
