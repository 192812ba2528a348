"""Shared test configuration.

Hypothesis profiles: "ci" is derandomized (reproducible in CI, prints the failing example's
blob); "dev" explores more random examples. The profile is chosen by HYPOTHESIS_PROFILE if set,
otherwise "ci" when CI is set, otherwise "dev".
"""

from __future__ import annotations

import os
import signal

from hypothesis import HealthCheck, settings

# Shared fixtures (stats_store, generated_store_path, catalog, ...) for every test module.
pytest_plugins = ["helpers.store_fixtures", "helpers.catalog_fixtures"]

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=50, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=100,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

# Ctrl-C tests signal the processes they start. A shell starts background jobs (`.ci/run &`)
# with SIGINT ignored and children inherit an ignored signal, so Python in them would install no
# KeyboardInterrupt handler and the signal would do nothing; a handled signal is reset to its
# default by exec, so handling it here gives every child the default, wherever the suite runs.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The S3 server fixtures (tests/helpers/s3_fixtures.py), shared by the S3 tests.
from helpers.s3_fixtures import private_s3, s3, s3_server  # noqa: E402, F401
