"""The probe's network: its definition (model), the fused and one-structure inference forms, training, calibration and the scikit-learn classifier around it."""
