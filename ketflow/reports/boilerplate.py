"""Methods boilerplate assembled from the workflow that runs (as fMRIPrep does).

Every stage workflow of the participant level carries its own methods paragraph (the
``__desc__`` of a niworkflows ``LiterateWorkflow``, written next to the nodes it describes);
``workflow.visit_desc()`` collects them.  This module turns that text into the methods
section of ``logs/CITATION.md`` and of the participant reports:

* paragraphs are ``**Heading.** text`` (the introduction has no heading), separated by blank
  lines; they are put in the reading order of :data:`SECTIONS`, whatever order the graph was
  visited in;
* citations are written ``[@key]`` in the paragraphs and rendered here with the in-text form
  of :data:`IN_TEXT` (``[@power]`` -> ``Power et al. 2012``); the reference list holds every
  cited work, in the order of :data:`REFERENCES`.

:class:`Methods` renders the result as Markdown or HTML; :func:`data_sentence` describes the
runs a participant contributed (the reports add it to the introduction).
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from dataclasses import dataclass

from .. import __version__

#: Full references, in the order of the reference lists.
REFERENCES = {
    "ketflow": "ketflow developers. ketflow: circuit measures after fMRIPrep. Version {version}.",
    "nipype": "Gorgolewski K, et al. (2011). Nipype: a flexible, lightweight and extensible neuroimaging data "
              "processing framework in Python. Front Neuroinform 5:13.",
    "fmriprep": "Esteban O, et al. (2019). fMRIPrep: a robust preprocessing pipeline for functional MRI. "
                "Nat Methods 16:111-116.",
    "nilearn": "Abraham A, et al. (2014). Machine learning for neuroimaging with scikit-learn. Front Neuroinform 8:14.",
    "lindquist": "Lindquist MA, et al. (2019). Modular preprocessing pipelines can reintroduce artifacts into fMRI "
                 "data. Hum Brain Mapp 40:2358-2376.",
    "satterthwaite": "Satterthwaite TD, et al. (2013). An improved framework for confound regression and filtering "
                     "for control of motion artifact in the preprocessing of resting-state functional connectivity "
                     "data. NeuroImage 64:240-256.",
    "behzadi": "Behzadi Y, et al. (2007). A component based noise correction method (CompCor) for BOLD and "
               "perfusion based fMRI. NeuroImage 37:90-101.",
    "power": "Power JD, et al. (2012). Spurious but systematic correlations in functional connectivity MRI networks "
             "arise from subject motion. NeuroImage 59:2142-2154.",
    "friston_glm": "Friston KJ, et al. (1994). Statistical parametric maps in functional imaging: a general linear "
                   "approach. Hum Brain Mapp 2:189-210.",
    "etkin": "Etkin A, et al. (2006). Resolving emotional conflict: a role for the rostral anterior cingulate cortex "
             "in modulating activity in the amygdala. Neuron 51:871-882.",
    "mclaren": "McLaren DG, et al. (2012). A generalized form of context-dependent psychophysiological interactions "
               "(gPPI): a comparison to standard approaches. NeuroImage 61:1277-1286.",
    "gitelman": "Gitelman DR, et al. (2003). Modeling regional and psychophysiologic interactions in fMRI: the "
                "importance of hemodynamic deconvolution. NeuroImage 19:200-207.",
    "ledoit": "Ledoit O, Wolf M (2004). A well-conditioned estimator for large-dimensional covariance matrices. "
              "J Multivar Anal 88:365-411.",
    "cole": "Cole MW, et al. (2019). Task activations produce spurious but systematic inflation of task functional "
            "connectivity estimates. NeuroImage 189:1-18.",
    "worsley_glm": "Worsley KJ, et al. (2002). A general statistical analysis for fMRI data. NeuroImage 15:1-15.",
    "friston_dcm": "Friston KJ, Harrison L, Penny W (2003). Dynamic causal modelling. NeuroImage 19:1273-1302.",
    "stephan": "Stephan KE, et al. (2007). Comparing hemodynamic models with DCM. NeuroImage 38:387-401.",
    "friston_vl": "Friston K, et al. (2007). Variational free energy and the Laplace approximation. "
                  "NeuroImage 34:220-234.",
    "friston_ar": "Friston KJ, et al. (2002). Classical and Bayesian inference in neuroimaging: applications. "
                  "NeuroImage 16:484-512.",
    "friston_peb": "Friston KJ, et al. (2016). Bayesian model reduction and empirical Bayes for group (DCM) "
                   "studies. NeuroImage 128:413-431.",
    "stephan_bms": "Stephan KE, et al. (2009). Bayesian model selection for group studies. NeuroImage "
                   "46:1004-1017.",
    "rigoux": "Rigoux L, et al. (2014). Bayesian model selection for group studies - revisited. NeuroImage "
              "84:971-985.",
    "zou": "Zou H, Hastie T (2005). Regularization and variable selection via the elastic net. J R Stat Soc B "
           "67:301-320.",
    "norbury": "Norbury A, et al. (2021). Neuroimaging correlates and predictors of response to repeated-dose "
               "intravenous ketamine in PTSD: preliminary evidence. Neuropsychopharmacology 46:2266-2277.",
    "varoquaux": "Varoquaux G (2018). Cross-validation failure: small sample sizes lead to large error bars. "
                 "NeuroImage 180:68-77.",
    "rissman2004": "Rissman J, Gazzaley A, D'Esposito M (2004). Measuring functional connectivity during distinct "
                   "stages of a cognitive task. NeuroImage 23:752-763.",
    "mumford2012": "Mumford JA, et al. (2012). Deconvolving BOLD activation in event-related designs for multivoxel "
                   "pattern classification analyses. NeuroImage 59:2636-2643.",
}

#: How ``[@key]`` reads in the text (ketflow's own reference is cited without in-text words).
IN_TEXT = {
    "ketflow": "", "nipype": "Gorgolewski et al. 2011", "fmriprep": "Esteban et al. 2019",
    "nilearn": "Abraham et al. 2014", "lindquist": "Lindquist et al. 2019", "satterthwaite": "Satterthwaite et al. 2013",
    "behzadi": "Behzadi et al. 2007", "power": "Power et al. 2012", "friston_glm": "Friston et al. 1994",
    "worsley_glm": "Worsley et al. 2002",
    "etkin": "Etkin et al. 2006", "mclaren": "McLaren et al. 2012", "gitelman": "Gitelman et al. 2003",
    "ledoit": "Ledoit & Wolf 2004", "cole": "Cole et al. 2019", "friston_dcm": "Friston et al. 2003",
    "stephan": "Stephan et al. 2007", "friston_vl": "Friston et al. 2007", "friston_ar": "Friston et al. 2002",
    "friston_peb": "Friston et al. 2016", "stephan_bms": "Stephan et al. 2009", "rigoux": "Rigoux et al. 2014",
    "zou": "Zou & Hastie 2005", "norbury": "Norbury et al. (2021)", "varoquaux": "Varoquaux 2018",
    "rissman2004": "Rissman et al. 2004", "mumford2012": "Mumford et al. 2012",
}

#: Headings of the methods paragraphs in reading order ("" = the introduction).
SECTIONS = ("", "Regions of interest", "Denoising", "Task activation", "Generalized PPI", "Beta-series connectivity",
            "Functional connectivity",
            "Dynamic causal modelling", "Group level")

_CITATION = re.compile(r"\[@([A-Za-z0-9_]+)\]")
_HEADING = re.compile(r"^\*\*(.+?)\.\*\* ", re.DOTALL)


def paragraph(heading: str, text: str) -> str:
    """A methods paragraph as a ``__desc__`` holds it (``**Heading.** text`` and a blank line)."""
    return (f"**{heading}.** {text}" if heading else text) + "\n\n"


@dataclass
class Methods:
    """Methods paragraphs as ``(heading, text)`` pairs (heading may be empty) and references."""

    paragraphs: list[tuple[str, str]]
    references: list[str]

    def markdown(self) -> str:
        """The text as Markdown, with a ``# Methods`` title and a reference list."""
        body = "\n\n".join(f"**{head}.** {text}" if head else text for head, text in self.paragraphs)
        refs = "\n".join(f"- {ref}" for ref in self.references)
        return "# Methods\n\n" + body + "\n\n## References\n\n" + refs + "\n"

    def html(self) -> str:
        """The text as an HTML fragment (paragraphs and a reference list), escaped."""
        paras = "\n".join(
            f"<p><strong>{html.escape(head)}.</strong> {html.escape(text)}</p>" if head
            else f"<p>{html.escape(text)}</p>"
            for head, text in self.paragraphs
        )
        refs = "\n".join(f"<li>{html.escape(ref)}</li>" for ref in self.references)
        return f'{paras}\n<h2 class="h5">References</h2>\n<ul class="references">\n{refs}\n</ul>'


def methods_from_desc(desc: str, *, data: str | None = None, group: bool = True) -> Methods:
    """The :class:`Methods` of boilerplate collected from a workflow (``visit_desc()``).

    ``data`` (a :func:`data_sentence`) is appended to the introduction; ``group=False``
    leaves out the group-level paragraph (a participant's report).  Paragraphs appearing
    twice (several subjects) are kept once.
    """
    found: dict[tuple[str, str], None] = {}
    for block in (b.strip() for b in desc.split("\n\n")):
        if not block:
            continue
        match = _HEADING.match(block)
        head, text = (match.group(1), block[match.end():]) if match else ("", block)
        if head not in SECTIONS:
            raise ValueError(f"methods paragraph with unknown heading {head!r}; known: {SECTIONS}")
        found[(head, text)] = None
    paragraphs = sorted((p for p in found if group or p[0] != "Group level"), key=lambda p: SECTIONS.index(p[0]))
    if data:
        paragraphs = [(h, f"{t} {data}" if not h else t) for h, t in paragraphs]
    cited = {key for _, text in paragraphs for key in _CITATION.findall(text)}
    unknown = sorted(cited - set(REFERENCES))
    if unknown:
        raise ValueError(f"methods text cites unknown references {unknown}")
    rendered = [(head, _CITATION.sub(lambda m: IN_TEXT[m.group(1)], text)) for head, text in paragraphs]
    return Methods(rendered, [REFERENCES[key].format(version=__version__) for key in REFERENCES if key in cited])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def data_sentence(runs: list[tuple[str | None, str, str | None]]) -> str:
    """One sentence listing the runs analysed (session, task, run), e.g. ``task 'faces' (2 runs;
    sessions pre, post)``."""
    sessions: dict[str, list[str]] = defaultdict(list)
    for session, task, _run in runs:
        sessions[task].append(session)
    parts = []
    for task, ses in sessions.items():
        labelled = list(dict.fromkeys(s for s in ses if s))
        where = f"; session{'s' if len(labelled) > 1 else ''} {', '.join(labelled)}" if labelled else ""
        parts.append(f"task '{task}' ({_plural(len(ses), 'run')}{where})")
    return f"{_plural(len(runs), 'BOLD run')} of this participant were analysed: {series(parts)}."


def series(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
