"""Records to table rows and back."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

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

# ---------------------------------------------------------------------------------------- rows

def _run_row(r: GenerationRun) -> tuple:
    return (r.run_id, dumps(r.config, f"run {r.run_id!r} config"), r.config_hash, r.seed,
            r.code_version, r.host, r.started, r.finished, dumps(r.counts, "counts"), r.kind)


def _run_from(row: sqlite3.Row) -> GenerationRun:
    cls = ImportRun if row["kind"] == "import" else GenerationRun
    return cls(run_id=row["run_id"], config=json.loads(row["config"]),
               config_hash=row["config_hash"], seed=row["seed"], code_version=row["code_version"],
               host=row["host"], started=row["started"], finished=row["finished"],
               counts=json.loads(row["counts"]), kind=row["kind"])


def _seq_row(s: Sequence) -> tuple:
    return (s.key, s.domain, s.sequence_id, s.run_id, s.seed, s.pattern, s.n_steps,
            json.dumps(s.shape), json.dumps(s.levels),
            json.dumps(s.perturbation_kinds, ensure_ascii=False), s.entropy_min, s.entropy_max,
            s.mean_min, s.mean_max, s.variance_min, s.variance_max, s.created, s.status, s.kind,
            s.source, dumps(s.sources, f"sequence {s.key!r} sources"))


def _seq_from(row: sqlite3.Row) -> Sequence:
    r = tuple(row)  # column order of _SEQ_COLS (SELECT * on the sequences table)
    return Sequence(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _loads(r[7]), _loads(r[8]),
                    _loads(r[9]), r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17], r[18],
                    r[19], _loads(r[20]))


_loads = json.JSONDecoder().decode


def _ts_row(t: TimeStep) -> tuple:
    return (t.key, t.sequence_key, t.t, t.mean, t.variance, t.entropy, t.sum,
            json.dumps(t.perturbation_kinds, ensure_ascii=False), t.valid_cells)


def _ts_from(row: sqlite3.Row) -> TimeStep:
    d = dict(row)
    d["perturbation_kinds"] = json.loads(d["perturbation_kinds"])
    return TimeStep(**d)


def _arr_row(a: ArrayRecord) -> tuple:
    st = a.stats
    return (a.key, a.sequence_key, a.level, a.field, json.dumps(a.shape), a.dtype, a.checksum,
            a.nbytes_stored, st["mean"], st["variance"], st["min"], st["max"], st.get("entropy"),
            a.derived_from, a.operation, st.get("valid_fraction"))


def _arr_from(row: sqlite3.Row) -> ArrayRecord:
    stats = {"mean": row["stat_mean"], "variance": row["stat_variance"], "min": row["stat_min"],
             "max": row["stat_max"]}
    if row["stat_entropy"] is not None:
        stats["entropy"] = row["stat_entropy"]
    if row["stat_valid_fraction"] is not None:
        stats["valid_fraction"] = row["stat_valid_fraction"]
    return ArrayRecord(key=row["key"], sequence_key=row["sequence_key"], level=row["level"],
                       field=row["field"], shape=json.loads(row["shape"]), dtype=row["dtype"],
                       checksum=row["checksum"], nbytes_stored=row["nbytes_stored"], stats=stats,
                       derived_from=row["derived_from"], operation=row["operation"])


def _dv_from(row: sqlite3.Row) -> DatasetVersion:
    return DatasetVersion(version_id=row["version_id"], query=json.loads(row["query"]),
                          split=json.loads(row["split"]),
                          sequence_keys=json.loads(row["sequence_keys"]), created=row["created"],
                          checksums=json.loads(row["checksums"]))


def _sf_from(row: sqlite3.Row) -> SourceFile:
    return SourceFile(key=row["key"], uri=row["uri"], size=row["size"], sha256=row["sha256"],
                      format=row["format"])


def _tr_from(row: sqlite3.Row) -> TrainingRun:
    return TrainingRun(run_id=row["run_id"], config=json.loads(row["config"]),
                       dataset_version_id=row["dataset_version_id"],
                       code_version=row["code_version"], host=row["host"],
                       started=row["started"], finished=row["finished"])


def _ck_from(row: sqlite3.Row) -> Checkpoint:
    return Checkpoint(ckpt_id=row["ckpt_id"], training_run_id=row["training_run_id"],
                      step=row["step"], metrics=json.loads(row["metrics"]), path=row["path"],
                      created=row["created"])


# (kind) -> (SQL fetching rows by key via json_each, row -> record); constant text
_NODE_FETCH: dict[str, tuple[str, Any]] = {
    "Sequence": ("SELECT * FROM sequences WHERE key IN "
                 "(SELECT atlas_key(value) FROM json_each(?))", _seq_from),
    "TimeStep": ("SELECT * FROM timesteps WHERE key IN "
                 "(SELECT atlas_key(value) FROM json_each(?))", _ts_from),
    "Array": ("SELECT * FROM arrays WHERE key IN (SELECT atlas_key(value) FROM json_each(?))", _arr_from),
    "GenerationRun": ("SELECT * FROM generation_runs WHERE kind = 'generate' AND run_id IN "
                      "(SELECT atlas_key(value) FROM json_each(?))", _run_from),
    "ImportRun": ("SELECT * FROM generation_runs WHERE kind = 'import' AND run_id IN "
                  "(SELECT atlas_key(value) FROM json_each(?))", _run_from),
    "SourceFile": ("SELECT * FROM source_files WHERE key IN (SELECT atlas_key(value) FROM json_each(?))",
                   _sf_from),
    "DatasetVersion": ("SELECT * FROM dataset_versions WHERE version_id IN "
                       "(SELECT atlas_key(value) FROM json_each(?))", _dv_from),
    "TrainingRun": ("SELECT * FROM training_runs WHERE run_id IN "
                    "(SELECT atlas_key(value) FROM json_each(?))", _tr_from),
    "Checkpoint": ("SELECT * FROM checkpoints WHERE ckpt_id IN "
                   "(SELECT atlas_key(value) FROM json_each(?))", _ck_from),
}
_KEY_ATTR = {"Sequence": "key", "TimeStep": "key", "Array": "key", "GenerationRun": "run_id",
             "ImportRun": "run_id", "SourceFile": "key",
             "DatasetVersion": "version_id", "TrainingRun": "run_id", "Checkpoint": "ckpt_id"}
