"""The store's errors, in a module of their own so that the store and its read paths
(:mod:`atlasstore.tensorstore_reader`) share them without importing each other."""

from __future__ import annotations


class StoreError(Exception):
    """Base of store errors."""


class NotAnAtlasStore(StoreError):
    """The path exists but is not an atlas store (or does not exist)."""


class InvalidName(StoreError, ValueError):
    """A domain or sequence name that could escape the store or is unsafe."""


class InvalidMetadata(StoreError, ValueError):
    """Metadata that cannot be stored as JSON (and read back as given)."""


class NotFound(StoreError, KeyError):
    """A missing domain, sequence, level or field."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class SequenceExists(StoreError):
    """A complete sequence is already stored under that name."""


class RemoteStoreError(StoreError):
    """The object store refused or failed a request (named by method and URL, never a secret)."""


class CorruptArray(StoreError):
    """Stored bytes fail their crc32c or the decoded values fail their checksum."""


def looks_corrupt(exc: BaseException) -> bool:
    """Whether a codec or storage library's exception reports damaged stored bytes (the
    libraries raise assorted types, so the message is what tells)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("crc", "checksum", "blosc", "decompress", "corrupt", "decod",
                                   "shard", "codec", "buffer", "zstd", "index", "data_loss",
                                   "digest"))
