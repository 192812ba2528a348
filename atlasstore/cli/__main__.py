"""``python -m atlasstore.cli``: the ``atlas`` command."""

import sys

from atlasstore.cli import main

sys.exit(main())
