"""The physics, in plain NumPy: :mod:`.fields` (energy maps, pyramids, gradients, entropy, the
invariants they keep) and :mod:`.synth` (the synthetic sequences of the five domains)."""
