"""``python -m benchmarks.signal_ablation ...``: the same command as ``python -m benchmarks
signal-ablation ...``."""

import sys

from benchmarks.__main__ import main

sys.exit(main(["signal-ablation", *sys.argv[1:]]))
