"""``python -m batchnorm``: see ``batchnorm.cli``."""

import sys

from .cli import main

sys.exit(main())
