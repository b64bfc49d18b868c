"""The steps behind the CLI that the demo and the benchmarks share, one module per verb:
``fit`` (``fit_probe``), ``evaluate`` (``evaluate_probe`` and its report), ``predict``
(``predict_file``) and ``calibrate`` (``calibrate_probe``, the risk-controlled threshold).

Each step reads and writes files only through the store and the artifact modules."""
