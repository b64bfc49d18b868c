"""``python -m probe_base.cli``: the ``probe`` command (as torchrun launches it)."""

import sys

from probe_base.cli import main

sys.exit(main())
