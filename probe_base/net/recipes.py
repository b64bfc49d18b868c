"""The probe's recipes as plain data (no torch): attention kinds, presets, calibration
methods. The network, the estimator and the CLI's choices all read them from here."""

NET_ATTENTIONS = ("self", "pooling")  # the network's two kinds of attention (probe_base.net.model)
ATTENTIONS = ("auto", *NET_ATTENTIONS)  # what ProbeClassifier(attention=...) accepts
# "auto" fits the linear-time pooling probe above this many atoms per structure: on AIMNet2
# (the fastest backbone here) self-attention costs 6.4 % of a pass at 99 atoms, 23 % at 999,
# pooling 3.4 % and 1.2 % (benchmarks/results/scaling_aimnet.md)
AUTO_POOLING_ATOMS = 250
CALIBRATIONS = ("temperature", "isotonic")  # ProbeClassifier(calibration=...), or None

PRESETS = {
    # what isayevlab/PROBE does: last layer, no element identity, loss-based selection
    "paper": dict(
        hidden=128,
        heads=4,
        attention_layers=1,
        dropout=0.1,
        element_embedding=False,
        attention="self",
        selection="loss",
        cv_folds=1,
        n_seeds=1,
        extras=("energy_per_atom", "log_n_atoms"),
        lr=1e-3,
        batch_size=64,
        patience=20,
    ),
}
