"""``atlas ls`` and ``atlas stats``: what the store holds. ``ls`` lists names and counts from
listings alone (one listing per domain, whatever it holds); ``ls --long`` and ``stats`` read the
sequence documents, never an array."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from typing import Any

from atlasstore.catalog.sync import sequence_kind
from atlasstore.cli.labels import (
    field_label,
    field_units,
    is_synthetic,
    origin,
    spans,
    synthetic_note,
    valid_fraction,
)
from atlasstore.cli.options import _fmt_bytes, _open_store
from atlasstore.errors import StoreError
from atlasstore.records import FieldSpec
from atlasstore.store.listing import sequence_names


def _sequence_line(seq: str, info: Mapping[str, Any]) -> str:
    ny, nx = info["shape"][-2:]
    cols = [seq, f"{info['n_steps']} steps", f"{ny}x{nx}",
            f"levels {','.join(map(str, info['levels']))}",
            field_label(FieldSpec.from_record(info.get("field")))]
    span = spans(info)
    if span:
        cols.append(span)
    frac = valid_fraction(info)
    if frac < 1.0:
        cols.append(f"valid {100 * frac:.1f} %")
    cols.append(origin(info))
    return "\t".join(cols)


def _domain_line(domain: str, infos: list[Mapping[str, Any]]) -> str:
    fields = sorted({f"{s.name} ({s.kind})" for s in
                     (FieldSpec.from_record(i.get("field")) for i in infos)})
    origins = sorted({sequence_kind(i.get("generation") or {}) + (
        " (synthetic)" if is_synthetic(i) else "") for i in infos})
    cols = [domain, f"{len(infos)} sequences"]
    if infos:
        cols += [", ".join(fields), ", ".join(origins)]
    return "\t".join(cols)


def cmd_ls(args: argparse.Namespace) -> int:
    """Names (and counts) from listings alone; ``--long`` reads every sequence document for the
    details, so its cost grows with what it lists."""
    store = _open_store(args)
    if not args.long:
        if args.domain:
            for seq in sequence_names(store, args.domain):
                print(seq)
        else:
            for d in store.domains():
                print(f"{d}\t{len(sequence_names(store, d))} sequences")
        return 0
    synthetic: set[str] = set()
    if args.domain:
        for seq in store.sequences(args.domain):
            info = store.sequence_info(args.domain, seq)
            print(_sequence_line(seq, info))
            if is_synthetic(info):
                synthetic.add(args.domain)
        incomplete = (set(store.sequences(args.domain, include_incomplete=True))
                      - set(store.sequences(args.domain)))
        for seq in sorted(incomplete):
            print(f"{seq}\t(incomplete: not visible to queries)")
    else:
        for d in store.domains():
            infos = [store.sequence_info(d, s) for s in store.sequences(d)]
            print(_domain_line(d, infos))
            if any(is_synthetic(i) for i in infos):
                synthetic.add(d)
    note = synthetic_note(synthetic)
    if note:
        print(note)
    return 0


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def field_stats(store: Any, domain: str) -> list[dict[str, Any]]:
    """Per-field statistics of a domain's committed sequences, from their step records: maps,
    mean of the step means and variances, entropy (extensive fields only), valid fraction."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for seq in store.sequences(domain):
        info = store.sequence_info(domain, seq)
        spec = FieldSpec.from_record(info.get("field"))
        groups.setdefault((spec.name, field_units(spec), spec.kind), []).append(info)
    if not groups:
        raise StoreError(f"domain {domain!r} has no complete sequences")
    out = []
    for (name, units, kind), infos in sorted(groups.items()):
        steps = [s for i in infos for s in i.get("steps") or ()]
        cells = [int(i["shape"][-2]) * int(i["shape"][-1]) * len(i.get("steps") or ())
                 for i in infos]
        valid = sum(valid_fraction(i) * c for i, c in zip(infos, cells, strict=True))
        rec: dict[str, Any] = {
            "domain": domain, "field": name, "units": units, "kind": kind,
            "n_sequences": len(infos), "n_maps": len(steps),
            "mean": _finite_or_none(_mean([s["mean"] for s in steps])),
            "variance": _finite_or_none(_mean([s["variance"] for s in steps])),
            "valid_fraction": valid / sum(cells) if sum(cells) else 1.0,
            "synthetic": all(is_synthetic(i) for i in infos),
        }
        entropies = [float(s["entropy"]) for s in steps if "entropy" in s]
        if kind == "extensive" and entropies:
            rec.update(entropy_mean=_mean(entropies), entropy_min=min(entropies),
                       entropy_max=max(entropies))
        out.append(rec)
    nbytes = store.nbytes_stored(f"{domain}/")
    for rec in out:
        rec["bytes_on_disk"] = nbytes  # the domain's, shared by its fields
    return out


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


def _stats_line(s: Mapping[str, Any]) -> str:
    line = (f"{s['domain']}: {s['n_sequences']} sequences, {s['n_maps']} maps, {s['field']} "
            f"[{s['units']}] ({s['kind']}): mean {s['mean']:.4g}, var {s['variance']:.4g}")
    if "entropy_mean" in s:
        line += (f", entropy {s['entropy_mean']:.4f} nats [{s['entropy_min']:.4f}, "
                 f"{s['entropy_max']:.4f}]")
    return line + f", valid {100 * s['valid_fraction']:.1f} %, {_fmt_bytes(s['bytes_on_disk'])}"


def cmd_stats(args: argparse.Namespace) -> int:
    store = _open_store(args)
    domains = [args.domain] if args.domain else store.domains()
    stats = [rec for d in domains if store.sequences(d) for rec in field_stats(store, d)]
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for s in stats:
        print(_stats_line(s))
    note = synthetic_note(s["domain"] for s in stats if s["synthetic"])
    if note:
        print(note)
    return 0
