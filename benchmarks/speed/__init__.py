"""How fast the tools are, against the code before the speed work (issue 18).

Every comparison runs the two versions of ``probe_base`` in separate processes, in
interleaved rounds (A B, B A, A B, ...), and reports the ratio of the medians measured
in that one run, so that the load of a shared machine hits both sides alike.

    python -m benchmarks evaluate-speed     # `probe evaluate` on 1000 structures (toy
                                            # backbone), evaluate_signal on 1e5
    python -m benchmarks startup            # `probe --help`, `probe plugins`

The baseline is ``probe_base`` at ``--baseline`` (default: the commit before the speed
work), exported with ``git archive`` into the cache and put first on ``PYTHONPATH``.
"""
