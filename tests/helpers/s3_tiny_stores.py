"""Stores of many tiny sequences on the test S3 server, built fast, and the requests that opening
one, selecting 1 % of its sequences and reading 10 windows cost (``tests/object_storage/test_s3_scale.py``,
``benchmarks/bench_remote.py``).

How they are built: two template sequences (64x64, one level, 2 steps; 8 objects each) are
written through the real write path, one by a "bulk" generation run and one by a "pick" run;
the server then copies them inside itself (:meth:`S3Server.clone`, no HTTP request per object)
to ``seq-00000 .. seq-<n-1>``, every 100th from the "pick" template, with the sequence id
replaced in each copy's ``zarr.json``. The catalog gets the records ``atlas catalog sync`` would
derive from those sequences, built from the templates' committed attributes (a sync would read
every sequence document: n GETs), and is bound to the store at its change log's head as a sync
leaves it (otherwise a query scans the store instead of using it). Every copy is a valid
committed sequence: audits and store scans read them like any other.
"""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.records import StoreSync
from atlasstore.catalog.selector import CatalogSelector
from atlasstore.catalog.sync import register_run, register_sequence_infos
from atlasstore.io.object_storage import S3Location
from atlasstore.io.provenance import utc_now
from atlasstore.query import Query
from atlasstore.store import AtlasStore, RunLog
from atlasstore.store.change_log import ChangeLog, store_id
from helpers.s3_server import S3Server

DOMAIN = "tiny"
PICK_EVERY = 100


def run_record(name: str) -> dict[str, Any]:
    rid = "run-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return {"run_id": rid, "config": {"domains": [DOMAIN], "sequences": 0, "seed": 0, "presets": {}},
            "config_hash": hashlib.sha256(name.encode()).hexdigest(), "seed": 0,
            "code_version": "tiny", "host": "tiny", "started": utc_now(), "finished": utc_now(),
            "counts": {}}


BULK, PICK = run_record("bulk"), run_record("pick")


def seq_id(i: int) -> str:
    return f"seq-{i:05d}"


def build(server: S3Server, url: str, n: int, catalog: Path) -> None:
    """A store of ``n`` tiny sequences at ``url`` (1 in :data:`PICK_EVERY` from the pick run)
    and its SQLite catalog at ``catalog``."""
    s = AtlasStore.create(url)
    s.create_domain(DOMAIN)
    runs = RunLog(s)
    for run in (BULK, PICK):
        runs.start(run)
    infos = {}
    ramp = np.linspace(0.5, 1.5, 64 * 64, dtype=np.float32).reshape(64, 64)
    for i, run in ((0, BULK), (1, PICK)):
        energy = np.stack([ramp + i, ramp * 2 + i])  # smooth: compresses to little, like moto's memory
        infos[run["run_id"]] = s.write_sequence(DOMAIN, seq_id(i), energy,
                                                generation={"run_id": run["run_id"], "seed": i})
    loc = S3Location.parse(url)
    base = loc.key(f"{DOMAIN}/")
    for i, run in ((0, BULK), (1, PICK)):
        ids = [j for j in range(2, n) if (j % PICK_EVERY == 1) == (run is PICK)]
        for k in range(0, len(ids), 5000):
            server.clone(loc.bucket, f"{base}{seq_id(i)}/",
                         [(f"{base}{seq_id(j)}/", seq_id(i), seq_id(j)) for j in ids[k:k + 5000]])
    with SQLiteCatalog(str(catalog)) as cat:
        for run in (BULK, PICK):
            register_run(cat, run)
        batch = []
        for j in range(n):
            info = copy.deepcopy(infos[(PICK if j % PICK_EVERY == 1 else BULK)["run_id"]])
            info["sequence_id"] = seq_id(j)
            batch.append(info)
            if len(batch) == 5000:
                register_sequence_infos(cat, batch)
                batch = []
        register_sequence_infos(cat, batch)
        # bound to the store at its change log's head, as `atlas catalog sync` leaves it (the
        # copies made inside the server wrote no log entries; their records are registered above)
        assert cat.commit_sync(None, StoreSync(store_id(s), ChangeLog(s).head()))


def open_select_read(server: S3Server, url: str, catalog: Path | None, windows: int = 10
                     ) -> tuple[Counter[str], int]:
    """Requests reaching the server for: open the store, select the pick run's sequences (1 %)
    through the catalog (or by scanning the store without one), read ``windows`` windows.
    Returns the counts by method and the number of sequences selected."""
    server.reset_counts()
    store = AtlasStore.open(url)
    cat = SQLiteCatalog(str(catalog)) if catalog is not None else None
    try:
        selector = CatalogSelector(cat) if cat is not None else None
        q = Query(store, domains=[DOMAIN], scale=64, window=2, run_id=PICK["run_id"],
                  selector=selector)
        selected = q.selection()
        wins = q.windows()[:windows]
        out = q.read_windows(wins)
        assert out["energy"].shape == (len(wins), 2, 64, 64)
    finally:
        if cat is not None:
            cat.close()
    return server.counts(), len(selected)
