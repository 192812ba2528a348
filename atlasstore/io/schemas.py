"""JSON Schemas shipped in ``schemas/`` and validation against them.

Every attribute block the store writes and every preset or generator config read from disk goes
through :func:`validate`, so a malformed document is refused with the JSON path of the problem
before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from atlasstore.errors import SchemaError


def schema_dir() -> Path:
    """The schemas folder: packaged copy in a wheel, the repo's ``schemas/`` in a checkout."""
    package = Path(__file__).resolve().parents[1]  # atlasstore/
    for candidate in (package / "_schemas", package.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("atlasstore schemas folder not found (expected atlasstore/_schemas "
                            "or schemas/ beside the package)")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load ``schemas/<name>.schema.json`` (checked to be a valid Draft 2020-12 schema)."""
    path = schema_dir() / f"{name}.schema.json"
    if not path.is_file():
        raise SchemaError(f"unknown schema {name!r} (no {path.name} in {path.parent})")
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return schema


@cache
def _registry() -> Registry:
    """All shipped schemas by their ``$id`` so that ``$ref`` between files resolves offline."""
    resources = []
    for path in sorted(schema_dir().glob("*.schema.json")):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), registry=_registry())


def validate(document: Any, name: str, what: str | None = None) -> Any:
    """Validate ``document`` against schema ``name``; return it unchanged or raise SchemaError.

    The message names the document, the JSON path of the first (most relevant) error and why.
    """
    errors = sorted(_validator(name).iter_errors(document), key=jsonschema.exceptions.relevance)
    if errors:
        err = errors[0]
        path = "/".join(str(p) for p in err.absolute_path) or "<root>"
        label = what or f"{name} document"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise SchemaError(f"{label} is invalid at {path}: {err.message}{more}")
    return document


def load_json(path: str | Path, name: str) -> Any:
    """Read a JSON file and validate it against schema ``name``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise SchemaError(f"{name} file {p} does not exist") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{name} file {p} is not valid JSON: {exc}") from None
    return validate(doc, name, what=f"{name} file {p}")


def named_document(name_or_path: str | Path | Mapping[str, Any], folder: Path, schema: str,
                   what: str) -> Mapping[str, Any]:
    """A shipped JSON document by name (``folder/<name>.json``), a JSON file (validated against
    ``schema``), or a mapping as given; ValueError naming the known names for an unknown one."""
    if isinstance(name_or_path, Mapping):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return load_json(p, schema)
    name = str(name_or_path)
    known = sorted(q.stem for q in folder.glob("*.json"))
    if name not in known:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(known)}")
    return json.loads((folder / f"{name}.json").read_text())
