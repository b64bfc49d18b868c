"""Reliability in practice on MACE backbones and real DFT data: the risk guarantee and the
MD watchdog. (The active-learning round is ``python -m benchmarks active-learning``.)

guarantee  For each dataset, PROBE is fitted once on 40 % of the held-out DFT set (seed 0).
           The other 60 % is split at random, ``--splits`` times, into a calibration half
           and a test half: SGR (``probe calibrate``'s default) picks the threshold on the
           calibration half for target risk alpha and confidence 1 - delta, and the test
           half measures the realised selective risk and coverage. The guarantee holds if
           the fraction of splits whose realised risk exceeds alpha (violations) is at most
           delta, within sampling error. A naive threshold (calibration risk <= alpha, no
           bound) is scored on the same splits to show that the check can see violations.
           CRC is scored as well (its guarantee: E[accepted and unreliable] <= alpha).

md         MACE ethanol (seed 1) in Langevin dynamics through the framework flag
           ``probe_mace.MACECalculator(..., probe=...)``, with the threshold from SGR and the
           ``ReliabilityWatchdog`` (stop after 10 consecutive unreliable steps, saving the
           frames). A 300 K run is the control; a hot run should be stopped. The saved frames
           are then scored by the 4-member MACE ensemble (force std) and compared with the
           300 K frames: disagreement is an independent check that the stop was warranted.

    python -m benchmarks practice guarantee            # ethanol and 3bpa
    python -m benchmarks practice md

(``python -m benchmarks.practice_mace ...``, the spelling the stored result pages quote, runs
the same command.)

Writes benchmarks/results/practice_guarantee_mace_q<quantile>.{json,md,png} and
benchmarks/results/practice_md_mace.{json,md,png} (+ the saved frames .xyz).
"""
