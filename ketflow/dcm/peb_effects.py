"""Named second-level effects of a PEB analysis: which entry of β is "session:arm on B_…".

A PEB posterior is a (K, W·P) array: K between-subject design columns, W within-subject
columns (1 for a one-session PEB; 2 — ``mean`` and ``session`` — for the longitudinal PEB of
:mod:`ketflow.dcm.peb_longitudinal`) and P DCM parameters. Each (between, within) pair is an
*effect* with one name: the between column's name for the session mean (``mean``, ``arm``,
``clinical``, ``arm:clinical``) and ``session`` / ``session:<between>`` for the post − pre
change (``session``, ``session:arm``, ``session:clinical``, ``session:arm:clinical``).
:class:`EffectGrid` maps names to entries, builds contrast weights and the masks of the model
families compared by :func:`ketflow.dcm.peb_reduce.compare_peb_models`, and reports a clear
error when a name is unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EffectGrid", "effect_name", "WITHIN_COLUMNS"]

#: The within-subject design columns of the longitudinal PEB: session mean and post − pre change.
WITHIN_COLUMNS = ("mean", "session")


def effect_name(between: str, within: str = "mean") -> str:
    """Name of the effect of between-subject column ``between`` on within-subject column ``within``."""
    if within == "mean":
        return between
    if within != "session":
        raise ValueError(f"unknown within-subject column {within!r}")
    return "session" if between == "mean" else f"session:{between}"


@dataclass(frozen=True)
class EffectGrid:
    """between : K between-subject column names; within : W within-subject column names
    (("mean",) for one session); parameters : P DCM parameter names."""

    between: tuple
    within: tuple
    parameters: tuple

    @property
    def effects(self) -> list[str]:
        """Effect names in the order of the rows of :meth:`table_index` (between-major)."""
        return [effect_name(b, w) for b in self.between for w in self.within]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the PEB's Ep: (K, W·P)."""
        return len(self.between), len(self.within) * len(self.parameters)

    def index(self, effect: str, parameter: str, where: str = "") -> tuple[int, int]:
        """(row, column) of one effect on one parameter in Ep; ValueError naming ``where`` if unknown."""
        pairs = {effect_name(b, w): (k, j) for k, b in enumerate(self.between) for j, w in enumerate(self.within)}
        if effect not in pairs:
            raise ValueError(f"{where}: effect {effect!r} is not in the design (effects: {', '.join(pairs)})")
        if parameter not in self.parameters:
            raise ValueError(f"{where}: parameter {parameter!r} is not a second-level DCM parameter "
                             f"(parameters: {', '.join(self.parameters)})")
        k, j = pairs[effect]
        return k, j * len(self.parameters) + self.parameters.index(parameter)

    def weights(self, spec: Mapping[str, Mapping[str, float]], where: str = "") -> np.ndarray:
        """Contrast weights (K, W·P) from {effect: {parameter: weight}}."""
        c = np.zeros(self.shape)
        for effect, params in spec.items():
            for parameter, weight in params.items():
                c[self.index(effect, parameter, where)] += float(weight)
        if not c.any():
            raise ValueError(f"{where}: the contrast has no non-zero weight")
        return c

    def mask(self, parameters: Sequence[str], effects: Sequence[str] | None = None, where: str = "") -> np.ndarray:
        """Bool (K, W·P): the given effects (default: all) of the given parameters."""
        m = np.zeros(self.shape, bool)
        for effect in effects if effects is not None else self.effects:
            for parameter in parameters:
                m[self.index(effect, parameter, where)] = True
        return m

    def labels(self) -> list[tuple[str, str]]:
        """(effect, parameter) of every entry of Ep.ravel(), in that order."""
        return [(effect_name(b, w), p) for b in self.between for w in self.within for p in self.parameters]
