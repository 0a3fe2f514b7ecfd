"""Readable names of DCM parameters, as the feature table and the group outputs use them.

The parameter vector's labels (:meth:`ketflow.dcm.model.ParameterLayout.names`, SPM's order:
``A_to2_from1``, ``B_to1_from2_in2``, ``C_to2_in1``, ``D_to1_from2_by2``) become
``A_vmPFC-to-amygdala_L``, ``B_amygdala_L-to-vmPFC_fearful``, ``C_faces-to-amygdala_L`` and
``D_amygdala_L-to-vmPFC_by-vmPFC`` (source first, as in the feature table's ``dcm_<task>_…``
columns); the hemodynamic parameters keep their labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["readable_parameter_name", "readable_parameter_names"]

_PATTERNS = (
    (re.compile(r"^A_to(\d+)_from(\d+)$"), lambda m, r, u: f"A_{r[int(m[2]) - 1]}-to-{r[int(m[1]) - 1]}"),
    (re.compile(r"^B_to(\d+)_from(\d+)_in(\d+)$"),
     lambda m, r, u: f"B_{r[int(m[2]) - 1]}-to-{r[int(m[1]) - 1]}_{u[int(m[3]) - 1]}"),
    (re.compile(r"^C_to(\d+)_in(\d+)$"), lambda m, r, u: f"C_{u[int(m[2]) - 1]}-to-{r[int(m[1]) - 1]}"),
    (re.compile(r"^D_to(\d+)_from(\d+)_by(\d+)$"),
     lambda m, r, u: f"D_{r[int(m[2]) - 1]}-to-{r[int(m[1]) - 1]}_by-{r[int(m[3]) - 1]}"),
)


def readable_parameter_name(label: str, regions: Sequence[str], inputs: Sequence[str]) -> str:
    """The readable name of one parameter label (regions and inputs in the DCM's order)."""
    for pattern, build in _PATTERNS:
        match = pattern.match(label)
        if match:
            try:
                return build(match, list(regions), list(inputs))
            except IndexError as err:
                raise ValueError(f"parameter {label} refers to a region or input beyond regions {list(regions)} "
                                 f"/ inputs {list(inputs)}") from err
    return label


def readable_parameter_names(labels: Sequence[str], regions: Sequence[str], inputs: Sequence[str]) -> list[str]:
    """Readable names of a list of parameter labels."""
    return [readable_parameter_name(label, regions, inputs) for label in labels]
