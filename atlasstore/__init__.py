"""atlasstore: generate, store, query and stream 2D energy maps for neural surrogates."""

__version__ = "0.1.0"
