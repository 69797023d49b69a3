"""Matplotlib, headless (Agg), for the report's PNGs."""

from __future__ import annotations

import io


def figure(width=7.0, height=4.0, ncols=1):
    """A matplotlib figure (headless, Agg) with `ncols` axes, sized in inches: (fig, axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def png(fig) -> bytes:
    """The figure as PNG bytes (closed after)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")  # no label cut at the figure's edge
    plt.close(fig)
    return buf.getvalue()
