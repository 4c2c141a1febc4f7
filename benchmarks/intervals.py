"""Mean and 95% Student-t interval over seeds, shared by the seed-averaged benchmarks."""

import numpy as np


def confidence_interval(values):
    """Mean and half-width of the 95% Student-t interval (nan for fewer than 2 values)."""
    values = np.asarray(values, dtype="float64")
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    from scipy import stats

    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def interval_cell(values, digits=3, sign="", separator="±"):
    """`"mean ± half"` for a table cell; `sign="+"` prints the mean's sign."""
    mean, half = confidence_interval(values)
    return f"{mean:{sign}.{digits}f} {separator} {half:.{digits}f}"
