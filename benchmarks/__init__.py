"""The benchmarks of PROBE on frozen MLIP features: ``python -m benchmarks --help``.

common.py      paths (REPO, DATA, CACHE, RESULTS), data sets and held-out splits
backbones/     the cached backbones: find or train them (one driver, a hook module per framework)
report.py      the one report writer (Markdown tables, result pages, results/README.md)
suite/         the benchmark suite (run, report, cost): protocol, runner, cost, page, readme, cli
ood_data/      the OOD benchmark's xTB data, backbones and stores (ood-data): layout, xtb,
               geometry, builders, labelling, training, stores, summary, cli
signal_ablation/  probe recipes vs ensemble (signal-ablation, ablation-table): stores, recipes,
               experiment, page, tables, cli
reference_scale/  the domain reference at 10^4-10^7 atoms (reference-scale): source, timing,
               experiment, page, cli
the others     one experiment each, with its subcommands (``register``)
"""
