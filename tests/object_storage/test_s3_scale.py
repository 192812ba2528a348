"""Cost grows with what is selected, not with the store: opening an s3:// store, selecting 1 % of
its sequences through the catalog and reading 10 windows costs the same requests at 1,000 and
3,000 sequences; without a catalog the store scan reads every sequence document.
(benchmarks/bench_remote.py measures 1k, 10k and 100k.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import s3_tiny_stores as tiny
from helpers.s3_fixtures import S3Bucket


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_requests_do_not_grow_with_the_store_when_a_catalog_selects(s3: S3Bucket, tmp_path: Path) -> None:
    got = {}
    for n in (1000, 3000):
        url, cat = s3.prefix(f"tiny{n}.zarr"), tmp_path / f"tiny{n}.sqlite"
        tiny.build(s3.server, url, n, cat)
        got[n], selected = tiny.open_select_read(s3.server, url, cat)
        assert selected == n // tiny.PICK_EVERY
    scan, selected_by_scan = tiny.open_select_read(s3.server, s3.prefix("tiny1000.zarr"), None)
    assert selected_by_scan == 10
    print(f"S3 SCALE: requests for open + select 1 % + read 10 windows: catalog {dict(got[1000])} "
          f"at 1k, {dict(got[3000])} at 3k; store scan {dict(scan)} at 1k")
    assert got[1000] == got[3000]  # flat in the store's size
    assert sum(got[1000].values()) < 60  # and small: a handful per window
    assert sum(scan.values()) > 1000  # the scan reads every sequence document
