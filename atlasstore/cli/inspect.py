"""The read commands: ``atlas query`` and ``show`` here; ``ls`` and ``stats`` in :mod:`.listing`
(re-exported for the parser)."""

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


def cmd_show(args: argparse.Namespace) -> int:
    from atlasstore.physics.fields import gradient_magnitude
    from atlasstore.records import primary_field

    store = _open_store(args)
    info = store.sequence_info(args.domain, args.sequence)
    name = primary_field(info)  # energy, or an imported field's own name
    if not 0 <= args.t < info["n_steps"]:
        raise UserError(f"--t {args.t} outside 0..{info['n_steps'] - 1}")
    # after the checks: a bad sequence or step is named even where the plots extra is missing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = info["levels"]
    fig, axes = plt.subplots(2, len(levels), figsize=(4 * len(levels), 7.5), squeeze=False)
    for j, lvl in enumerate(levels):
        e = store.read(args.domain, args.sequence, lvl, name, t=args.t)
        gx = store.read(args.domain, args.sequence, lvl, "grad_x", t=args.t)
        gy = store.read(args.domain, args.sequence, lvl, "grad_y", t=args.t)
        sym = "E" if name == "energy" else name
        panels = ((e, f"{sym} at {lvl}", "inferno"),
                  (gradient_magnitude(gx, gy), f"|grad {sym}| at {lvl}", "viridis"))
        for i, (img, title, cmap) in enumerate(panels):
            ax = axes[i][j]
            im = ax.imshow(img, cmap=cmap, origin="lower")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
    step = info["steps"][args.t]
    stats = (f"H={step['entropy']:.3f} nats  sum={step['sum']:.4g}" if "entropy" in step
             else f"mean={step['mean']:.4g}")  # an intensive field has no entropy
    fig.suptitle(f"{args.domain}/{args.sequence} t={args.t}  {stats}")
    fig.tight_layout()
    out = Path(args.out or f"{args.domain}_{args.sequence}_t{args.t}.png")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")
    return 0
