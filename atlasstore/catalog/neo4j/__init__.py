"""Neo4j catalog: the shared team catalog and lineage graph, over Bolt with the official driver.

Connection
----------
``Neo4jCatalog(uri=None, user=None, password=None, database=None)`` reads ``NEO4J_URI``,
``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``ATLAS_NEO4J_DATABASE`` from the environment for anything
not given (``eval "$(scripts/neo4j env)"`` sets them for the development server). There is no
default password in code; without one the driver connects without authentication. The driver's
``verify_connectivity()`` runs at open: an unreachable server or refused credentials raise
:class:`CatalogUnavailable` naming the URI (credentials stripped) and never the password.

Graph model
-----------
One label per kind (``Sequence``, ``TimeStep``, ``Array``, ``SourceFile``, ``DatasetVersion``,
``Checkpoint``, ``GenerationRun``, ``ImportRun``, ``TrainingRun``, ``CodeVersion``, ``Host``),
each node keyed by a ``key``
property under a uniqueness constraint (created with ``IF NOT EXISTS`` at open, so opening is
idempotent and concurrent opens are safe), range indexes on the filter properties. Relationship
types as in :mod:`atlasstore.catalog.base`. Properties that Neo4j cannot hold natively (config,
counts, query, split, metrics, checksums dicts, a sequence's ``sources`` list) are canonical
JSON strings; ``ArrayRecord.stats`` is flattened to ``stats_mean`` ... ``stats_entropy``; a
missing value (no entropy, no run) is an absent property. The store-sync state is one
``AtlasStoreSync`` node, updated under the documented lost-update guard (its lock is taken with
a write before its version is read, in the transaction that applies the changes).

Layout 2 (this code) reads graphs of layout 1 as they are (absent ``kind`` properties read as
"generate"), and marks them 2 on open so older code refuses them.

Safety and performance
----------------------
* Parameters only: every Cypher text in this module is a constant (filters are composed from a
  fixed table of constant fragments; labels and relationship types are literals). No value ever
  becomes part of a query string.
* Writes are batched ``UNWIND $rows AS r MERGE ...`` statements (``batch_size`` rows per
  statement) inside one managed transaction per public call (``session.execute_write``: retried
  on transient errors such as deadlocks or leader changes; every write is an idempotent MERGE so a
  retry is harmless). Reads use ``session.execute_read``.
* Lineage is one read query: the forward closure over ``wasDerivedFrom|wasGeneratedBy|used|
  wasAssociatedWith`` (variable-length, distinct endpoints), plus the structural parent (the
  Sequence) of every part reached and *its* forward closure, plus the edges among those nodes.
  This is exact for the catalog's model, where only Arrays and TimeSteps are parts, only
  Sequences have parts, and nothing upstream of a Sequence is a part; the SQLite backend computes
  the same closure with a general recursive CTE, and the contract tests compare them.
"""

from atlasstore.catalog.neo4j.catalog import Neo4jCatalog
from atlasstore.catalog.neo4j.rows import safe_uri
from atlasstore.catalog.neo4j.schema import BOLT_SCHEMES, DEFAULT_BATCH_SIZE, SCHEMA_VERSION

__all__ = ["Neo4jCatalog", "BOLT_SCHEMES", "SCHEMA_VERSION", "DEFAULT_BATCH_SIZE", "safe_uri"]
