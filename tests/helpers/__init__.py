"""Shared test helpers: fixtures (stores, catalogs, S3), real servers, subprocess and file
writers; imported as ``helpers.<module>``."""
