"""What a probe adds to one MD step of each plugin's ASE calculator (issue 18).

For each backbone importable in this environment: the same model as a plain calculator
and with ``probe=``; replicated ethanol molecules (9 to ~1000 atoms, no cell); each step
moves the atoms a little and asks for forces, as MD does. The overhead is measured two ways, in the
process's CPU time (on a shared machine wall time also counts other processes' turns):
within each probed step, the time outside the wrapped calculator's own pass over that pass
(paired: the load cancels); and end to end, plain and probed steps in interleaved rounds
inside one process (A B, B A, ...), the ratio of the median step times minus one.

Four probes run, each in its own process:

``before``                   the code before the speed work with its probe (self-attention);
``after, self``              this tree's code, the same probe file (the fused inference path);
``after, pooling``           this tree's code, the network of the linear-time pooling
                             architecture alone (no domain test, no per-atom error head);
``after, pooling + domain``  the same with ``probe fit``'s defaults: the domain test
                             (per-atom k-NN novelty) and the per-atom force-error head.

    python -m benchmarks step-cost                     # every backbone importable here
    python -m benchmarks step-cost --backbones mace --molecules 1 11 111

The models have the benchmark suite's architectures (``benchmarks/backbones/<backbone>.py``):
the suite's trained seed 1 if cached, else one trained for one or two epochs (the cost of a
step does not depend on how long a model was trained); SevenNet-0 is sevenn's bundled
checkpoint. Probes are fitted on 100 labelled ethanol structures of the shared test set.
Writes ``benchmarks/results/step_cost_<backbone>.{json,md,png}``.
"""
