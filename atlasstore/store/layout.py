"""How every array of a store is chunked, sharded and compressed (:class:`Layout`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from zarr.codecs import BloscCodec, Crc32cCodec


@dataclass(frozen=True)
class Layout:
    """Chunking and compression of every array; chosen by ``benchmarks/bench_store.py --layout``.

    ``time_chunk`` steps per inner chunk (the unit a read decodes), ``time_shard`` steps per
    shard (the unit of a file/object, rounded up to whole inner chunks). ``clevel`` 0 disables
    compression. Default: 4-step inner chunks with Blosc LZ4 + byte shuffle read 4-8 step
    windows ~2x faster through TensorStore than 1-step zstd(1)+bitshuffle, for 10 % more bytes
    (ratio 1.26 vs 1.38 on the synthetic domains) - see docs/store-format.md, "Chunking".
    """

    time_chunk: int = 4
    time_shard: int = 128
    cname: Literal["lz4", "lz4hc", "blosclz", "snappy", "zlib", "zstd"] = "lz4"
    clevel: int = 5
    shuffle: Literal["noshuffle", "shuffle", "bitshuffle"] = "shuffle"

    def compressors(self) -> list[Any]:
        codecs: list[Any] = []
        if self.clevel > 0:
            codecs.append(BloscCodec(cname=self.cname, clevel=self.clevel, shuffle=self.shuffle))
        codecs.append(Crc32cCodec())
        return codecs


DEFAULT_LAYOUT = Layout()
