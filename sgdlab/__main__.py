"""``python -m sgdlab``: see :mod:`sgdlab.cli`."""

import sys

from .cli import main

sys.exit(main())
