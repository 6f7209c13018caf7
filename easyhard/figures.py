"""Figures: one way to get matplotlib and to save a figure, for every module that draws.

``pyplot()`` returns matplotlib.pyplot on the Agg backend (no display needed) with mathtext
switched off: class names, labels and paths are user text and are drawn as typed (a ``$`` in a
class folder's name crashed the report and the similarity figures). ``save(fig, path)`` writes a
PNG atomically and closes the figure; ``png(fig)`` returns its bytes (the report embeds them).

    from easyhard.figures import pyplot, save
    plt = pyplot()
    fig, ax = plt.subplots()
    ...
    save(fig, "out/figure.png")
"""

from __future__ import annotations

import io

DPI = 110


def pyplot():
    """matplotlib.pyplot, Agg backend, user text never parsed as mathtext."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return buf.getvalue()


def save(fig, path: str, dpi: int = DPI) -> None:
    """Write the figure to `path` as PNG, atomically; the figure is closed."""
    from .io import atomic_write

    data = png(fig, dpi)
    with atomic_write(path) as f:
        f.write(data)


def figure_blocks(folder: str) -> list[tuple[str, str, str]]:
    """An analysis folder's PNG figures as report blocks ("figure", path, caption), by name."""
    import os

    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    return [("figure", os.path.join(folder, f), f"{os.path.basename(folder)}/{f}") for f in names]
