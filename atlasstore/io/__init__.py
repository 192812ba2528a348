"""Where bytes live: locations (local paths, ``s3://``, fsspec URLs), the object-storage client,
JSON Schemas and provenance stamps. The lowest layer: it knows nothing of stores or sequences."""
