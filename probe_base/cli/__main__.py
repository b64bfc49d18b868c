"""``python -m probe_base.cli``: the ``probe`` command (as torchrun launches it)."""

import sys

from . import main

sys.exit(main())
