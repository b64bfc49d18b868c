"""``python -m benchmarks.ood_data ...`` (the spelling results/ood.md quotes): the same
command as ``python -m benchmarks ood-data ...``."""

import sys

from benchmarks.__main__ import main

sys.exit(main(["ood-data", *sys.argv[1:]]))
