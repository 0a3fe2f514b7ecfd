"""Stage: the circuit ROIs on the run's BOLD grid."""

from __future__ import annotations

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ...config import Circuit, circuit_roi_names, load_spheres
from ...docs import fill_doc
from ...interfaces.rois import BuildROIs
from ...reports.boilerplate import paragraph


def rois_desc(circuit: Circuit) -> str:
    """Methods paragraph of the ROIs (names, coordinates, resampling, minimum size, signal)."""
    rois = circuit_roi_names(circuit)
    spheres = {s.name: s for s in load_spheres(circuit)}
    described = [
        f"{name} ({s.x:g}, {s.y:g}, {s.z:g}; radius {s.radius_mm:g} mm)" if (s := spheres.get(name)) else name
        for name in rois
    ]
    where = ("spheres at MNI152NLin2009cAsym coordinates" if not circuit.atlas
             else f"labels of the atlas {circuit.atlas.dseg.name}"
             + (" and spheres at MNI152NLin2009cAsym coordinates" if spheres else ""))
    signal = "the mean over its voxels" if circuit.signal == "mean" else "its first eigenvariate, as in SPM"
    voxels = f"{circuit.min_voxels} voxel" + ("" if circuit.min_voxels == 1 else "s")
    return paragraph("Regions of interest", (
        f"The circuit ('{circuit.name}') comprised {len(rois)} regions ({where}): {', '.join(described)}. "
        "Each region was resampled to the BOLD grid of every run (nearest neighbour), intersected with that "
        f"run's brain mask and required at least {voxels}; its signal was {signal}."))


@fill_doc
def init_rois_wf(circuit: Circuit, *, name: str = "rois_wf") -> Workflow:
    """Place the circuit's ROIs on the run's grid, within its brain mask.

    Parameters
    ----------
    %(circuit)s
    %(name)s

    Inputs
    ------
    bold_ref
        The run's BOLD reference (or any image on its grid).
    %(brain_mask)s

    Outputs
    -------
    %(labels)s
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = rois_desc(circuit)
    inputnode = pe.Node(IdentityInterface(fields=["bold_ref", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=["labels_file", "labels_tsv"]), name="outputnode")
    rois = pe.Node(BuildROIs(circuit=circuit), name="rois", mem_gb=0.5)
    workflow.connect([
        (inputnode, rois, [("bold_ref", "bold_ref"), ("brain_mask", "brain_mask")]),
        (rois, outputnode, [("labels_file", "labels_file"), ("labels_tsv", "labels_tsv")]),
    ])
    return workflow
