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
from ..io.write import copy_file, copy_with_sidecar


def entities_in_name(path: str) -> dict:
    """``key-value`` entities of a file name (``seed-`` read as ``desc-``); the suffix is dropped.

    A name without entities (``coefficients.svg``) gives its stem as ``desc``.
    """
    stem = Path(path).name.split(".")[0]
    if "-" not in stem:
        return {"desc": stem}
    entities = {}
    for part in stem.split("_")[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not value:
            raise ValueError(f"{Path(path).name}: cannot read entity '{part}' from the file name")
        entities["desc" if key == "seed" else key] = value
    return entities


class _DerivativesSinkInputSpec(BaseInterfaceInputSpec):
    in_file = InputMultiObject(File(exists=True), mandatory=True, desc="file(s) to store")
    varying_entity = Str(desc="entity whose value differs between the files (e.g. 'stat')")
    varying_values = InputMultiObject(Str, desc="value of ``varying_entity`` for each file, in order")
    entities_from_filename = traits.Bool(
        False, usedefault=True,
        desc="take further entities from each file's own name (``contrast-X_stat-Y_statmap.nii.gz``), "
             "as ketflow's interfaces name their outputs; a ``seed-`` entity becomes ``desc-``")
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
    out_file = traits.List(File(exists=True), desc="the stored files")
    out_meta = traits.List(File(exists=True), desc="their JSON sidecars")


class DerivativesSink(SimpleInterface):
    """Store outputs with their BIDS names and provenance sidecars, atomically.

    Several files can be stored at once when they differ in one entity only
    (``varying_entity`` with one value per file, e.g. the ``stat-`` of connectivity matrices).
    """

    input_spec = _DerivativesSinkInputSpec
    output_spec = _DerivativesSinkOutputSpec

    def _run_interface(self, runtime):
        inputs = self.inputs
        in_files = list(inputs.in_file)
        values = list(inputs.varying_values) if inputs.varying_entity else [None] * len(in_files)
        if len(values) != len(in_files):
            raise ValueError(f"{len(in_files)} files but {len(values)} values of '{inputs.varying_entity}'")
        meta = {}
        if inputs.metadata_file:
            meta.update(json.loads(Path(inputs.metadata_file).read_text()))
        meta.update(inputs.metadata or {})
        links = inputs.source_links or {}
        meta["Sources"] = sorted(bids_uri(f, links) for f in (inputs.source_files or []))
        meta["GeneratedBy"] = {"Name": "ketflow", "Version": __version__, "ConfigHash": inputs.config_hash}
        self._results["out_file"], self._results["out_meta"] = [], []
        for in_file, value in zip(in_files, values):
            entities = {k: v for k, v in inputs.entities.items() if v is not None}
            if inputs.varying_entity:
                entities[inputs.varying_entity] = value
            if inputs.entities_from_filename:
                entities.update(entities_in_name(in_file))
            out_file = build_path(inputs.out_dir, entities, inputs.suffix, inputs.extension, inputs.datatype)
            self._results["out_file"].append(str(out_file))
            if inputs.sidecar:
                sidecar = out_file.with_name(out_file.name[: -len(inputs.extension)] + ".json")
                copy_with_sidecar(in_file, out_file, sidecar, meta)
                self._results["out_meta"].append(str(sidecar))
            else:
                copy_file(in_file, out_file)
        return runtime
