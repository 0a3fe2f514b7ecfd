"""Shared parameter documentation, written once (as nilearn's and XCP-D's ``fill_doc``).

A docstring holding ``%(name)s`` gets the entry ``name`` of :data:`docdict` when its function
is decorated with :func:`fill_doc`; continuation lines are indented to the docstring's own
indentation.  A literal ``%`` in such a docstring is written ``%%``.
"""

from __future__ import annotations

from collections.abc import Callable

docdict: dict[str, str] = {
    # workflow construction
    "name": """name : :obj:`str`
    Name of the workflow (unique within its parent workflow).""",
    "mem_gb": """mem_gb : :obj:`float`
    Memory (GB) the node holding the run's voxel data is expected to need, for Nipype's
    MultiProc scheduler (:func:`ketflow.workflows.bold.resources.bold_memory_gb`).""",
    "tr": """tr : :obj:`float`
    Repetition time of the run (s).""",
    "start_time": """start_time : :obj:`float`
    Acquisition time (s) of the first volume's slice-timing reference (BIDS ``StartTime``);
    event onsets are read against it.""",
    "described_tasks": """described_tasks : :obj:`dict` of :obj:`str` to :class:`ketflow.config.Task`
    The tasks the methods text describes (the subject's tasks, by label); they
    only change the ``__desc__`` paragraph, never the computation.""",
    "run": """run : :class:`ketflow.io.bids.RunInputs`
    The run's input files and timing.""",
    # typed configuration sections
    "circuit": """circuit : :class:`ketflow.config.Circuit`
    The configuration's ``circuit`` section (ROIs, minimum voxels, ROI signal).""",
    "denoising": """denoising : :class:`ketflow.config.Denoising`
    The configuration's ``denoising`` section (strategy, censoring, filter, exclusion).""",
    "task": """task : :class:`ketflow.config.Task`
    The run's task section (conditions, derived conditions, contrasts).""",
    "glm": """glm : :class:`ketflow.config.GLM`
    The configuration's ``glm`` section (HRF, noise model, high-pass).""",
    "ppi": """ppi : :class:`ketflow.config.PPI`
    The configuration's ``ppi`` section (seeds, deconvolution, symmetrisation).""",
    "connectivity": """connectivity : :class:`ketflow.config.Connectivity`
    The configuration's ``connectivity`` section (measures, seed maps).""",
    "dcm": """dcm : :class:`ketflow.config.DCM`
    The configuration's ``dcm`` section (regions, inputs, connection masks, model space).""",
    # files passed between stages
    "bold_cache": """bold_cache
    The run's in-mask BOLD: (time, in-mask voxels) float32 ``.npy``, voxels in C order of
    the brain mask (:mod:`ketflow.io.boldcache`).""",
    "brain_mask": """brain_mask
    fMRIPrep's brain mask of the run, on the BOLD grid.""",
    "labels": """labels_file, labels_tsv
    The circuit ROIs on the run's grid: int16 label image and its table (``index``, ``name``,
    voxel counts, ``coverage``).""",
    "task_data": """percent_bold, task_design
    The run's in-mask data in percent signal change and its task design
    (:class:`ketflow.interfaces.task.TaskModelData`).""",
    "confounds_file": """confounds_file
    The run's confound regressors for task models, one spike column per censored volume
    (:class:`ketflow.interfaces.confounds.SelectConfounds`).""",
    "events_file": """events_file
    The run's BIDS ``events.tsv``.""",
}

_indented: dict[int, dict[str, str]] = {}


def _indent(lines: list[str]) -> int:
    """Smallest indentation of the non-blank lines."""
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    return min(widths) if widths else 0


def fill_doc(function: Callable) -> Callable:
    """Replace ``%(name)s`` in ``function``'s docstring by :data:`docdict` entries (in place)."""
    doc = function.__doc__
    if not doc:
        return function
    width = _indent(doc.splitlines()[1:])
    if width not in _indented:
        pad = " " * width
        _indented[width] = {key: "\n".join([text.splitlines()[0]] + [pad + line for line in text.splitlines()[1:]])
                            for key, text in docdict.items()}
    try:
        function.__doc__ = doc % _indented[width]
    except (KeyError, TypeError, ValueError) as err:
        raise RuntimeError(f"cannot fill the docstring of {function.__qualname__}: {err!r}") from err
    return function
