"""The domain's reference at scale (issue 28): per-element FAISS index build time, memory
per reference atom, recall@5 against exact k-NN, query time per atom and per MD step, at
10^4 to 10^7 reference atoms; the domain test's false-alarm and OOD flag rates with the
exact and the approximate index side by side. Each size is built with every ``--kinds``
(IVF-SQ with the tuned nprobe, the earlier IVF-PQ with nprobe 16) and the MD step's query
(one 140-atom structure, ``novelty_of_one``) is timed for all of them in interleaved
rounds (minima: the machine may be shared), split into the FAISS search and its coarse
quantiser: once with a fresh search per step, and over a real MD run (``--md-steps``
steps of Cu clusters moving as at 300 K, ``_md_trajectory``) with the search a calculator keeps across steps
(``probe_base/domain/step_neighbours.py``), with the share of atoms searched afresh and the
largest change of an atom's novelty against a fresh search. Up to ``--exact-compare`` atoms the exact index of the same reference is fitted
too: flag rates side by side, each within two binomial standard errors of exact.

    python -m benchmarks reference-scale                     # 10^4 .. 10^7 (~40 min, ~4 GB)
    python -m benchmarks reference-scale --sizes 10000 100000 --kinds ivfsq

Features: TinyMLIP (``probe_base/toy.py``, 64 features: two interaction blocks of 32),
trained on 120 EMT Cu clusters, read on ``--base`` real EMT Cu clusters (13/19/38 atoms,
rattle 0.02-0.08 A). A reference of n atoms: n <= the real atoms, the first n real atoms;
larger, real atom ``i mod n_real`` plus Gaussian noise of ``--noise`` x each feature's
standard deviation, generated chunk by chunk from a seeded generator (never held whole),
so the 10^7 reference is the real atoms replicated ~200x with noise. Structures for the
range test: the real clusters' energies and atom counts.

Calibration (ID, 300 structures), test ID (1000) and three OOD sets (300 each: hot,
rattle 0.15-0.25 A; strained, x1.06-1.10; vacancy + rattle 0.08-0.12) are other EMT
clusters read by the same backbone.
"""
