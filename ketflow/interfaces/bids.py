"""Writing outputs into the BIDS-Derivatives dataset.

:class:`DerivativesSink` is ketflow's equivalent of niworkflows' ``DerivativesDataSink``:
niworkflows' sink only accepts the entities of its own configuration (no ``stat-``, ``seg-``
or ``contrast-`` as XCP-D and BIDS Stats Models use them), so ketflow names files with
:func:`ketflow.io.derivatives.build_path` and writes them atomically (temporary file +
rename) together with a JSON sidecar carrying provenance: the ketflow version, the
configuration hash and the input files as BIDS URIs.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    traits,
)

from .. import __version__
from ..io.derivatives import build_path, bids_uri
from ..io.write import copy_file, write_json


class _DerivativesSinkInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="file to store")
    out_dir = Str(mandatory=True, desc="root of the output derivatives dataset")
    entities = traits.Dict(mandatory=True, desc="BIDS entities of the output (sub, ses, task, ...)")
    suffix = Str(mandatory=True, desc="BIDS suffix (timeseries, relmat, statmap, ...)")
    extension = Str(mandatory=True, desc="extension with its dot (.tsv, .nii.gz, .svg)")
    datatype = Str("func", usedefault=True, desc="BIDS datatype folder ('figures' for report figures)")
    source_files = InputMultiObject(Str, desc="input files the output comes from")
    source_links = traits.Dict(desc="dataset name -> folder, for BIDS URIs")
    metadata = traits.Dict(desc="sidecar fields describing the output")
    metadata_file = File(exists=True, desc="JSON file of further sidecar fields (from the computing node)")
    config_hash = Str("", usedefault=True, desc="SHA-256 of the resolved analysis configuration")
    sidecar = traits.Bool(True, usedefault=True, desc="write a JSON sidecar next to the file")


class _DerivativesSinkOutputSpec(TraitedSpec):
    out_file = File(desc="the stored file")
    out_meta = File(desc="its JSON sidecar")


class DerivativesSink(SimpleInterface):
    """Store one output with its BIDS name and provenance sidecar, atomically."""

    input_spec = _DerivativesSinkInputSpec
    output_spec = _DerivativesSinkOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        entities = {k: v for k, v in inputs.entities.items() if v is not None}
        out_file = build_path(inputs.out_dir, entities, inputs.suffix, inputs.extension, inputs.datatype)
        copy_file(inputs.in_file, out_file)
        self._results["out_file"] = str(out_file)
        if inputs.sidecar:
            meta = {}
            if inputs.metadata_file:
                meta.update(json.loads(Path(inputs.metadata_file).read_text()))
            meta.update(inputs.metadata or {})
            links = inputs.source_links or {}
            meta["Sources"] = sorted(bids_uri(f, links) for f in (inputs.source_files or []))
            meta["GeneratedBy"] = {"Name": "ketflow", "Version": __version__, "ConfigHash": inputs.config_hash}
            sidecar = out_file.with_name(out_file.name[: -len(inputs.extension)] + ".json")
            write_json(sidecar, meta)
            self._results["out_meta"] = str(sidecar)
        return runtime
