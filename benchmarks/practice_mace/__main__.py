"""``python -m benchmarks.practice_mace ...`` (the spelling the stored result pages quote):
the same command as ``python -m benchmarks practice ...``."""

import sys

from benchmarks.__main__ import main

sys.exit(main(["practice", *sys.argv[1:]]))
