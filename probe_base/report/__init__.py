"""Measuring and showing: metrics, every method at one operating point, baselines, plots, the HTML report and the chemiscope export."""
