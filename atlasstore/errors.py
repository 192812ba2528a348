"""Every public error of atlasstore, under one root: :class:`AtlasError`.

Like zarr's ``zarr.errors``: one module, imported by every layer and importing nothing of
ours, so a caller catches ``AtlasError`` for anything the library refuses, and the CLI turns
an error into its exit code by the class's :attr:`AtlasError.exit_code` instead of listing
types. The families keep the built-in base they always had (``ValueError`` for bad input,
``KeyError``/``LookupError`` for missing things), so ``except ValueError`` in old code still
catches them.
"""

from __future__ import annotations

#: exit status of ``atlas`` for a refused request (bad input, missing data, a service down)
EXIT_USER_ERROR = 2


class AtlasError(Exception):
    """Root of every error atlasstore raises on purpose. ``exit_code`` is what ``atlas``
    exits with when one reaches it (2: the request was refused; the message says why)."""

    exit_code: int = EXIT_USER_ERROR

# --------------------------------------------------------------------------- store
class StoreError(AtlasError):
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


# -------------------------------------------------------------------- catalog
class CatalogError(AtlasError):
    """Base of catalog errors (bad records, missing references, backend failures)."""


class CatalogUnavailable(CatalogError):
    """The catalog backend cannot be reached or refuses our credentials.

    The message names the URI (without credentials) and never contains a password.
    """

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"catalog at {uri} is unavailable: {reason}")


class CatalogMismatch(CatalogError):
    """The catalog was built for another store (its recorded store id differs)."""


class CatalogNotFound(CatalogError, LookupError):
    """A referenced run, sequence, dataset version, ... is not in the catalog."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class CatalogNotSynced(CatalogError):
    """The catalog has never been synced with this store, and its change log alone cannot build
    it (the store predates the log, or the catalog already holds other data)."""


# ----------------------------------------------------------------------- runs
class EngineError(AtlasError, ValueError):
    """An engine (scheduler, workers) that cannot run."""


class PlanError(AtlasError, ValueError):
    """A generation plan that cannot run."""


class PlanClash(PlanError):
    """Planned sequence ids already hold other data in the store; refused before any work."""


# ---------------------------------------------------------------------- query
class QueryError(AtlasError, ValueError):
    """A query that cannot be answered as asked."""


class QueryNameError(QueryError, InvalidName):
    """A domain or sequence name in a query that could escape the store."""


# ------------------------------------------------------------------ documents
class SchemaError(AtlasError, ValueError):
    """A document does not match its JSON Schema."""


# ------------------------------------------------------------------- training
class StreamError(AtlasError, ValueError):
    """A stream that cannot be built as asked, or a state that does not belong to it."""


class ChangeLogError(StoreError):
    """The change log is damaged (an entry that is not a change document)."""


class ImportPlanError(AtlasError, ValueError):
    """An import that cannot run as asked (refused before any work)."""


class SourceError(AtlasError, ValueError):
    """A source file that cannot be imported; the message names the file."""


# -------------------------------------------------------------------- physics
class EnergyMapError(AtlasError, ValueError):
    """A map that is not a valid energy map (bad values, shape, aspect or scale)."""


class GridError(EnergyMapError):
    """A map size the pyramid cannot halve cleanly (or levels it cannot reach)."""


class SolverDiverged(EnergyMapError):
    """A PDE solver's run went non-finite (blew up) or broke a physics bound its preset sets
    (atlasstore.physics.solvers); the message names the step and the measured value. Nothing of
    the run is stored."""


class ThermodynamicViolation(AtlasError, ValueError):
    """A transformation broke a physical law; carries the measured numbers.

    ``kind`` is ``"energy_conservation"`` or ``"entropy_decrease"``; ``measured`` is the relative
    energy error or the entropy change; ``limit`` is the tolerance it was held to.
    """

    def __init__(self, kind: str, measured: float, limit: float, before: float, after: float,
                 context: str = "") -> None:
        self.kind = kind
        self.measured = float(measured)
        self.limit = float(limit)
        self.before = float(before)
        self.after = float(after)
        self.context = context
        where = f" ({context})" if context else ""
        if kind == "energy_conservation":
            msg = (f"energy not conserved{where}: sum E {before:.6g} -> {after:.6g}, relative error "
                   f"{measured:.3e} exceeds tolerance {limit:.3e}")
        else:
            msg = (f"entropy decreased{where}: H {before:.6f} -> {after:.6f} nats, change "
                   f"{measured:+.3e} below -{limit:.3e}")
        super().__init__(msg)


# ------------------------------------------------------------------------ nvp
class ModelError(AtlasError, ValueError):
    """A model that cannot be built for the given levels/shapes/domains."""


class TrainError(AtlasError, ValueError):
    """A training run that cannot start or continue as configured."""


class EvalError(AtlasError, ValueError):
    """An evaluation that cannot run as asked (no training data for the baselines, ...)."""


class StoreLocked(StoreError):
    """Another live writer holds the store's writer lock (or took it from this one)."""


# --------------------------------------------------------------- command line
class UserError(AtlasError):
    """Raised by commands for a clean one-line exit."""


