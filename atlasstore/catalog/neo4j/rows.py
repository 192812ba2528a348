"""Records to node properties and rows back to records; URIs without credentials."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from atlasstore.catalog.base import (
    dumps,
)
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    ImportRun,
    Sequence,
    SourceFile,
    TimeStep,
    TrainingRun,
)

# --------------------------------------------------------------------------------- conversion

_FLOAT_SEQ = ("entropy_min", "entropy_max", "mean_min", "mean_max", "variance_min", "variance_max")


def _run_props(r: GenerationRun) -> dict[str, Any]:
    return {"key": r.run_id, "run_id": r.run_id, "config": dumps(r.config, "config"),
            "config_hash": r.config_hash, "seed": r.seed, "code_version": r.code_version,
            "host": r.host, "started": r.started, "finished": r.finished,
            "counts": dumps(r.counts, "counts"), "kind": r.kind}


def _run_from(p: Mapping[str, Any]) -> GenerationRun:
    kind = p.get("kind") or "generate"
    cls = ImportRun if kind == "import" else GenerationRun
    return cls(run_id=p["run_id"], config=json.loads(p["config"]), config_hash=p["config_hash"],
               seed=p["seed"], code_version=p["code_version"], host=p["host"],
               started=p["started"], finished=p.get("finished"), counts=json.loads(p["counts"]),
               kind=kind)


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _seq_row(s: Sequence) -> list[Any]:
    return [s.key, s.domain, s.sequence_id, s.run_id, s.seed, s.pattern, s.n_steps,
            list(s.shape), list(s.levels), list(s.perturbation_kinds), _float(s.entropy_min),
            _float(s.entropy_max), float(s.mean_min), float(s.mean_max), float(s.variance_min),
            float(s.variance_max), s.created, s.status, s.kind, s.source,
            dumps(s.sources, f"sequence {s.key!r} sources")]


def _kind(kind: str | None, run_id: str | None) -> str:
    """A sequence's kind; graphs of layout 1 have none (every sequence had a run)."""
    return kind or ("generate" if run_id else "api")


def _seq_from(p: Mapping[str, Any]) -> Sequence:
    return Sequence(key=p["key"], domain=p["domain"], sequence_id=p["sequence_id"],
                    run_id=p.get("run_id"), seed=p.get("seed"), pattern=p.get("pattern"),
                    n_steps=p["n_steps"], shape=list(p["shape"]), levels=list(p["levels"]),
                    perturbation_kinds=list(p.get("perturbation_kinds") or []),
                    entropy_min=p.get("entropy_min"), entropy_max=p.get("entropy_max"),
                    mean_min=p["mean_min"], mean_max=p["mean_max"],
                    variance_min=p["variance_min"], variance_max=p["variance_max"],
                    created=p["created"], status=p["status"],
                    kind=_kind(p.get("kind"), p.get("run_id")), source=p.get("source"),
                    sources=json.loads(p.get("sources") or "[]"))


def _ts_row(t: TimeStep) -> list[Any]:
    return [t.key, t.sequence_key, t.t, float(t.mean), float(t.variance), _float(t.entropy),
            _float(t.sum), list(t.perturbation_kinds), t.valid_cells]


def _seq_from_row(r: list[Any]) -> Sequence:
    return Sequence(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7]), list(r[8]),
                    list(r[9] or []), r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17],
                    _kind(r[18], r[3]), r[19], json.loads(r[20] or "[]"))


def _ts_from_row(r: list[Any]) -> TimeStep:
    return TimeStep(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7] or []), r[8])


def _ts_from(p: Mapping[str, Any]) -> TimeStep:
    return TimeStep(key=p["key"], sequence_key=p["sequence_key"], t=p["t"], mean=p["mean"],
                    variance=p["variance"], entropy=p.get("entropy"), sum=p.get("sum"),
                    perturbation_kinds=list(p.get("perturbation_kinds") or []),
                    valid_cells=p.get("valid_cells"))


def _arr_row(a: ArrayRecord) -> list[Any]:
    st = a.stats
    ent = st.get("entropy")
    return [a.key, a.sequence_key, a.level, a.field, list(a.shape), a.dtype, a.checksum,
            a.nbytes_stored, float(st["mean"]), float(st["variance"]), float(st["min"]),
            float(st["max"]), None if ent is None else float(ent), a.derived_from, a.operation,
            _float(st.get("valid_fraction"))]


def _arr_from(p: Mapping[str, Any]) -> ArrayRecord:
    stats = {"mean": p["stats_mean"], "variance": p["stats_variance"], "min": p["stats_min"],
             "max": p["stats_max"]}
    if p.get("stats_entropy") is not None:
        stats["entropy"] = p["stats_entropy"]
    if p.get("stats_valid_fraction") is not None:
        stats["valid_fraction"] = p["stats_valid_fraction"]
    return ArrayRecord(key=p["key"], sequence_key=p["sequence_key"], level=p["level"],
                       field=p["field"], shape=list(p["shape"]), dtype=p["dtype"],
                       checksum=p["checksum"], nbytes_stored=p["nbytes_stored"], stats=stats,
                       derived_from=p.get("derived_from"), operation=p.get("operation"))


def _dv_from(p: Mapping[str, Any]) -> DatasetVersion:
    return DatasetVersion(version_id=p["version_id"], query=json.loads(p["query"]),
                          split=json.loads(p["split"]),
                          sequence_keys=list(p.get("sequence_keys") or []), created=p["created"],
                          checksums=json.loads(p.get("checksums") or "{}"))


def _sf_from(p: Mapping[str, Any]) -> SourceFile:
    return SourceFile(key=p["key"], uri=p["uri"], size=p["size"], sha256=p["sha256"],
                      format=p["format"])


def _tr_from(p: Mapping[str, Any]) -> TrainingRun:
    return TrainingRun(run_id=p["run_id"], config=json.loads(p["config"]),
                       dataset_version_id=p["dataset_version_id"],
                       code_version=p.get("code_version"), host=p.get("host"),
                       started=p["started"], finished=p.get("finished"))


def _ck_from(p: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(ckpt_id=p["ckpt_id"], training_run_id=p["training_run_id"], step=p["step"],
                      metrics=json.loads(p["metrics"]), path=p["path"], created=p["created"])


_FROM_PROPS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "Sequence": _seq_from, "TimeStep": _ts_from, "Array": _arr_from,
    "GenerationRun": _run_from, "ImportRun": _run_from, "SourceFile": _sf_from,
    "DatasetVersion": _dv_from, "TrainingRun": _tr_from, "Checkpoint": _ck_from,
}


def safe_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` part (for messages)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
