"""``python -m wgflow``: the same as the ``wgflow`` command."""

import sys

from wgflow.cli import main

sys.exit(main())
