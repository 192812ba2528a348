"""Feeding a model: windows of a query as a random-access source (:mod:`.windows`), their
normalisation statistics (:mod:`.normalization`) and the streaming JAX iterator
(:mod:`.stream`)."""
