"""Which of the evaluated structures the report shows: the least trusted (lowest
P(reliable)), the probe's per-atom map to colour them by, and the actual per-atom force
errors where the store has reference forces. Numbers only; the drawing is in
``probe_base.report.structure_drawing`` and the HTML in ``probe_base.report.structures_html``.
"""

from __future__ import annotations

import numpy as np

from probe_base.io.frames import atom_rows


def least_trusted(arrays, n) -> np.ndarray:
    """Rows of the ``n`` structures with the lowest P(reliable), larger error first on ties."""
    order = np.lexsort((-np.asarray(arrays["errors"]), np.asarray(arrays["p_reliable"])))
    return order[:n]


def probe_atom_map(arrays):
    """The per-atom map to colour by, (per-atom arrays, label): the predicted force error
    when the probe has a per-atom head, else the attention importance."""
    if arrays.get("atom_error") is not None:
        return arrays["atom_error"], "predicted force error (eV/Å)"
    return arrays["importance"], "importance (share of the structure)"


def _actual_force_errors(data, row):
    errors = getattr(data, "atom_force_error", None)
    if errors is None:
        return None
    values = np.asarray(errors[atom_rows(data, row)], dtype=float)
    return values if len(values) and np.all(np.isfinite(values)) else None
