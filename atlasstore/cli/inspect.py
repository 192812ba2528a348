"""The read commands: ``atlas query`` here; ``ls`` and ``stats`` in :mod:`.listing`, ``show`` in
:mod:`.show` (re-exported for the parser)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from atlasstore.catalog.protocol import Catalog
from atlasstore.cli.listing import cmd_ls, cmd_stats
from atlasstore.cli.options import (
    _note,
    _open_catalog,
    _open_store,
)
from atlasstore.cli.show import cmd_show
from atlasstore.errors import UserError

__all__ = ["cmd_ls", "cmd_query", "cmd_show", "cmd_stats"]


def _build_query(args: argparse.Namespace, store: Any, catalog: Catalog | None) -> Any:
    from atlasstore.query import Query

    selector = None
    if catalog is not None:
        from atlasstore.catalog.selector import CatalogSelector

        selector = CatalogSelector(catalog)
    return Query(store, domains=tuple(args.domains) if args.domains else None,
                 sequences=tuple(args.sequences) if args.sequences else None,
                 scale=args.scale, fields=None if args.fields is None else tuple(args.fields),
                 window=args.window,
                 stride=args.stride, time_range=args.time_range, region=args.region,
                 entropy=args.entropy, mean=args.mean, variance=args.variance,
                 perturbation=args.perturbation, run_id=args.run, selector=selector)


def cmd_query(args: argparse.Namespace) -> int:
    import numpy as np

    from atlasstore.errors import NotFound

    store = _open_store(args)
    catalog = None if args.no_catalog else _open_catalog(args)
    try:
        q = _build_query(args, store, catalog)
        n = q.count()
        _note(getattr(q.selector, "view", None))
        if args.count:
            print(n)
            return 0
        if n == 0:
            raise UserError("query selects no windows")
        if n > args.limit:
            raise UserError(f"query selects {n} windows, more than --limit {args.limit}; "
                            f"narrow it or raise --limit")
        try:
            data = q.to_numpy()
        except NotFound as exc:
            if catalog is None:
                raise
            raise UserError(f"{exc} (the store changed while reading, or the catalog does not "
                            "match it: run `atlas catalog sync`, or query with --no-catalog)"
                            ) from None
    finally:
        if catalog is not None:
            catalog.close()
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".partial.npz")
        np.savez(tmp, **{k: v for k, v in data.items() if k != "ids"}, ids=np.array(data["ids"]))
        os.replace(tmp, out)
        shapes = ', '.join(f'{k}{tuple(v.shape)}' for k, v in data.items() if k != 'ids')
        print(f"{n} windows -> {out} ({shapes})")
    else:
        for wid in data["ids"]:
            print(wid)
    return 0
