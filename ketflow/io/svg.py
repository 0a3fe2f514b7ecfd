"""Deterministic SVG text of matplotlib figures.

matplotlib's SVG backend writes the current date into the file's metadata and names clip
paths, markers and glyphs with ids hashed from a random salt (``uuid4``) unless
``rcParams["svg.hashsalt"]`` is set, so saving the same figure twice gives different files.
:func:`figure_to_svg` fixes both, so reruns on the same inputs give byte-identical figures.
"""

from __future__ import annotations

import io

import matplotlib

#: Salt of matplotlib's SVG element ids (any fixed string makes them reproducible).
HASH_SALT = "ketflow"


def figure_to_svg(fig, **savefig_kwargs) -> str:
    """SVG text of ``fig`` without a date and with reproducible element ids.

    ``savefig_kwargs`` are passed on to :meth:`matplotlib.figure.Figure.savefig`
    (e.g. ``bbox_inches="tight"``); ``format`` and ``metadata`` are set here.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": HASH_SALT}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, **savefig_kwargs)
    return buffer.getvalue()


def write_svg(path, fig, **savefig_kwargs):
    """Write ``fig`` as deterministic SVG (:func:`figure_to_svg`) atomically, then close it
    (pyplot keeps the figures it made until they are closed); returns the path."""
    import matplotlib.pyplot as plt

    from .write import write_text

    out = write_text(path, figure_to_svg(fig, **savefig_kwargs))
    plt.close(fig)
    return out
