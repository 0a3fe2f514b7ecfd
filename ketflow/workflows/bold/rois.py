"""Stage: the circuit ROIs on the run's BOLD grid, their quality and the coverage rule."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import Circuit, circuit_roi_names, load_spheres
from ...docs import fill_doc
from ...interfaces.roi_quality import ROIQuality
from ...interfaces.rois import BuildROIs
from ...reports.boilerplate import paragraph


#: Outputs of the ROI stage.
ROIS_OUTPUTS = ["labels_file", "labels_tsv", "placed_labels_file", "placed_labels_tsv", "quality_tsv", "quality_json"]


def rois_desc(circuit: Circuit) -> str:
    """Methods paragraph of the ROIs (names, coordinates, resampling, minimum size, signal)."""
    rois = circuit_roi_names(circuit)
    spheres = {s.name: s for s in load_spheres(circuit)}
    described = [
        f"{name} ({s.x:g}, {s.y:g}, {s.z:g}; radius {s.radius_mm:g} mm)" if (s := spheres.get(name)) else name
        for name in rois
    ]
    also = " and spheres at MNI152NLin2009cAsym coordinates" if spheres else ""
    where = {"spheres": "spheres at MNI152NLin2009cAsym coordinates",
             "anatomical": "ketflow's anatomical circuit atlas in MNI152NLin2009cAsym: Neuromorphometrics labels "
                           "with anterior hippocampus and anterior insula cut at documented anatomical planes, "
                           "regions mutually exclusive" + also,
             "atlas": f"labels of the atlas {circuit.atlas.dseg.name if circuit.atlas else ''}" + also}[circuit.rois]
    signal = "the mean over its voxels" if circuit.signal == "mean" else "its first eigenvariate, as in SPM"
    voxels = f"{circuit.min_voxels} voxel" + ("" if circuit.min_voxels == 1 else "s")
    if circuit.rois == "anatomical":
        resampled = "resampled to the BOLD grid of every run by majority vote of the 1 mm atlas voxels"
        if circuit.grey_matter_threshold is not None:
            resampled += (f" and restricted to grey matter (probability above {circuit.grey_matter_threshold:g} in "
                          "fMRIPrep's grey-matter map in the output space, the template's when absent)")
    else:
        resampled = "resampled to the BOLD grid of every run (nearest neighbour)"
    rule = circuit.coverage
    dropout = (f" or more than {rule.max_dropout_fraction:.0%} of its voxels in signal dropout (temporal mean below "
               f"{rule.dropout_fraction:g} times the brain's median)" if rule.max_dropout_fraction is not None else "")
    return paragraph("Regions of interest", (
        f"The circuit ('{circuit.name}') comprised {len(rois)} regions ({where}): {', '.join(described)}. "
        f"Each region was {resampled} and intersected with that run's brain mask; its signal was {signal}. "
        "For every run and region the voxel count, temporal SNR (median over voxels of mean / SD after a "
        "quadratic detrend) and the fraction of voxels in dropout were recorded; a region left with fewer than "
        f"{voxels}{dropout} was excluded from that run's analyses, with the reason recorded."))


@fill_doc
def init_rois_wf(circuit: Circuit, *, name: str = "rois_wf") -> Workflow:
    """Place the circuit's ROIs on the run's grid, within its brain mask; measure their quality and
    keep those the coverage rule passes.

    Parameters
    ----------
    %(circuit)s
    %(name)s

    Inputs
    ------
    bold_ref
        The run's BOLD reference (or any image on its grid).
    %(brain_mask)s
    bold_cache
        The run's in-mask BOLD cache (scanner intensities), for tSNR and dropout.
    confounds_tsv
        fMRIPrep's confounds (non-steady-state volumes are left out of the QC).
    gm_probseg
        fMRIPrep's grey-matter probability in the output space (optional).

    Outputs
    -------
    %(labels)s
        (the ROIs kept by the coverage rule, renumbered 1..k)
    placed_labels_file, placed_labels_tsv
        Every ROI as placed, before the coverage rule.
    quality_tsv, quality_json
        Per-ROI voxel count, tSNR, dropout and exclusion (``desc-rois_qc.tsv``) and its sidecar.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = rois_desc(circuit)
    inputnode = pe.Node(IdentityInterface(fields=["bold_ref", "brain_mask", "bold_cache", "confounds_tsv",
                                                  "gm_probseg"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=ROIS_OUTPUTS), name="outputnode")
    rois = pe.Node(BuildROIs(circuit=circuit), name="rois", mem_gb=0.5)
    quality = pe.Node(ROIQuality(circuit=circuit), name="roi_quality", mem_gb=0.5)
    workflow.connect([
        (inputnode, rois, [("bold_ref", "bold_ref"), ("brain_mask", "brain_mask"), ("gm_probseg", "gm_probseg")]),
        (inputnode, quality, [("bold_cache", "bold_cache"), ("brain_mask", "brain_mask"),
                              ("confounds_tsv", "confounds_tsv")]),
        (rois, quality, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv"), ("rois_meta", "rois_meta")]),
        (rois, outputnode, [("labels_file", "placed_labels_file"), ("labels_tsv", "placed_labels_tsv")]),
        (quality, outputnode, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv"),
                               ("quality_tsv", "quality_tsv"), ("quality_json", "quality_json")]),
    ])
    return workflow
