"""The Neo4j catalog: the writing and the reading halves over one driver."""

from __future__ import annotations

from atlasstore.catalog.neo4j.queries import Neo4jQueries
from atlasstore.catalog.neo4j.writes import Neo4jWrites


class Neo4jCatalog(Neo4jWrites, Neo4jQueries):
    """The catalog on a Neo4j 5 server (Bolt, official ``neo4j`` driver).

    ``connection_timeout``: seconds to establish a TCP connection; ``max_transaction_retry_time``:
    how long managed transactions retry transient failures; ``batch_size``: rows per ``UNWIND``
    statement; ``validate``: check records against the JSON Schemas before writing.
    """
