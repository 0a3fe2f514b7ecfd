"""Per-run workflows: the stage workflows of one BOLD run and its derivatives workflow.

=========================  ===========================================================
:func:`init_bold_wf`        one run, composed of the stages below (:mod:`.base`)
``init_bold_cache_wf``      the in-mask BOLD cache (:mod:`.data`)
``init_rois_wf``            circuit ROIs on the run's grid (:mod:`.rois`)
``init_denoise_wf``         denoising and ROI signals (:mod:`.denoise`)
``init_connectivity_wf``    ROI-to-ROI and seed-to-voxel connectivity (:mod:`.connectivity`)
``init_task_data_wf``       task runs: confounds, percent-scaled data, design (:mod:`.data`)
``init_activation_wf``      activation GLM (:mod:`.activation`)
``init_gppi_wf``            generalized PPI (:mod:`.gppi`)
``init_dcm_wf``             DCM (:mod:`.dcm`)
``init_bold_derivatives_wf`` every output stored (:mod:`.outputs`)
=========================  ===========================================================
"""

from .base import bold_cache_file, init_bold_wf, run_wf_name
from .resources import MEMORY_COPIES, bold_memory_gb

__all__ = ["MEMORY_COPIES", "bold_cache_file", "bold_memory_gb", "init_bold_wf", "run_wf_name"]
