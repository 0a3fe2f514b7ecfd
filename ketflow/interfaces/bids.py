"""Writing outputs into the BIDS-Derivatives dataset: niworkflows' sink with ketflow's names.

:class:`DerivativesDataSink` subclasses niworkflows' ``DerivativesDataSink`` as XCP-D does
(``xcp_d/interfaces/bids.py``): it is configured with ketflow's BIDS entities
(``ketflow/data/bids_config.json``, the order of the current BIDS schema plus the
statistical-model entities ``roi``, ``model``, ``contrast`` and ``stat``), takes entity
values as inputs (``desc=``, ``atlas=``, ``stat=``; a list gives one value per file) and
takes the run's identifying entities from ``source_file`` (the fMRIPrep BOLD series; with
several source files, only the entities they share, as niworkflows does).  Names are built
by :func:`ketflow.io.names.build_path`, the one naming authority.

Two things differ from niworkflows' sink, on purpose: every file is written atomically
(temporary file + rename; :mod:`ketflow.io.write`), and every output gets a JSON sidecar
carrying provenance: the input files as BIDS URIs (``Sources``), the ketflow version and the
SHA-256 of the resolved configuration (``GeneratedBy``), written after the data file so that a
pair is never inconsistent.  NIfTI headers are copied as they are.

:class:`DerivativesSink` keeps the earlier call signature (an ``entities`` dict, ``out_dir``,
``metadata``), which the group level uses.
"""

from __future__ import annotations

import json
from pathlib import Path

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    DynamicTraitedSpec,
    File,
    InputMultiObject,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from .. import __version__, templates
from ..io.derivatives import bids_uri
from ..io.names import (
    ENTITY_ORDER,
    SOURCE_ENTITIES,
    bids_config,
    build_path,
    entities_in_name,
    parse_name,
    path_patterns,
)
from ..io.write import copy_file, copy_with_sidecar

# niworkflows' sink module lists TemplateFlow's templates when imported: point TemplateFlow at
# ketflow's offline home first, so that the import never tries to download anything.
templates.activate()
from niworkflows.interfaces.bids import DerivativesDataSink as _NiworkflowsDataSink  # noqa: E402


class _DerivativesDataSinkInputSpec(DynamicTraitedSpec, BaseInterfaceInputSpec):
    base_directory = Str(mandatory=True, desc="root of the output derivatives dataset")
    in_file = InputMultiObject(File(exists=True), mandatory=True, desc="file(s) to store")
    source_file = InputMultiObject(
        Str, desc="input file(s) the outputs derive from (the fMRIPrep BOLD series): their shared identifying "
                  "entities (sub ... space) name the outputs")
    suffix = Str(mandatory=True, desc="BIDS suffix (timeseries, relmat, statmap, ...)")
    extension = Str(desc="extension with its dot (.tsv, .nii.gz); default: that of each input file")
    datatype = Str("func", usedefault=True, desc="BIDS datatype folder ('figures' for report figures)")
    entities_from_filename = traits.Bool(
        False, usedefault=True,
        desc="take further entities from each input file's own name (``contrast-X_stat-Y_statmap.nii.gz``), "
             "as ketflow's interfaces name their outputs")
    meta_dict = traits.Dict(Str, desc="sidecar fields describing the output")
    metadata_file = File(exists=True, desc="JSON file of further sidecar fields (from the computing node)")
    meta_by_entity = traits.Dict(
        Str, traits.Dict(Str, traits.Dict),
        desc="entity -> {value -> sidecar fields}: further fields for the files with that entity value "
             "(e.g. the BEP017 fields of each stat- measure of a run's relmats)")
    sources = InputMultiObject(Str, desc="input files recorded in the sidecar's Sources, as BIDS URIs")
    source_links = traits.Dict(desc="dataset name -> folder, for BIDS URIs")
    config_hash = Str("", usedefault=True, desc="SHA-256 of the resolved analysis configuration")
    sidecar = traits.Bool(True, usedefault=True, desc="write a JSON sidecar next to each file")


class _DerivativesDataSinkOutputSpec(TraitedSpec):
    out_file = traits.List(File(exists=True), desc="the stored files")
    out_meta = traits.List(File(exists=True), desc="their JSON sidecars")


class DerivativesDataSink(_NiworkflowsDataSink):
    """Store outputs under their BIDS names with provenance sidecars, atomically.

    Entity inputs (any key of :data:`ketflow.io.names.ENTITY_ORDER`) override those of the
    source file; ``None`` removes one.  A list value names the input files one by one (e.g.
    ``stat`` of connectivity matrices, connected from the computing node).
    """

    input_spec = _DerivativesDataSinkInputSpec
    output_spec = _DerivativesDataSinkOutputSpec
    out_path_base = ""
    _always_run = False  # cached like any node: rerunning a finished workflow rewrites nothing
    _config_entities = frozenset(ENTITY_ORDER)
    _config_entities_dict = bids_config()["entities"]
    _file_patterns = tuple(path_patterns())

    def _run_interface(self, runtime):
        inputs = self.inputs
        in_files = list(inputs.in_file)
        per_file = [dict(self._source_entities()) for _ in in_files]
        for key in sorted(self._allowed_entities):
            value = getattr(inputs, key)
            if not isdefined(value):
                continue
            values = list(value) if isinstance(value, (list, tuple)) else [value] * len(in_files)
            if len(values) != len(in_files):
                raise ValueError(f"{len(in_files)} files but {len(values)} values of entity '{key}'")
            for entities, item in zip(per_file, values):
                entities[key] = item
        if inputs.entities_from_filename:
            for entities, in_file in zip(per_file, in_files):
                entities.update(entities_in_name(in_file))
        meta = self._sidecar_fields()
        by_entity = inputs.meta_by_entity if isdefined(inputs.meta_by_entity) else {}
        self._results["out_file"], self._results["out_meta"] = [], []
        for in_file, entities in zip(in_files, per_file):
            extension = inputs.extension if isdefined(inputs.extension) else "".join(Path(in_file).suffixes)
            out_file = build_path(inputs.base_directory, entities, inputs.suffix, extension, inputs.datatype)
            self._results["out_file"].append(str(out_file))
            if inputs.sidecar:
                sidecar = out_file.with_name(out_file.name[: -len(extension)] + ".json")
                copy_with_sidecar(in_file, out_file, sidecar, self._file_fields(meta, by_entity, entities))
                self._results["out_meta"].append(str(sidecar))
            else:
                copy_file(in_file, out_file)
        return runtime

    def _source_entities(self) -> dict:
        """Entities (:data:`~ketflow.io.names.SOURCE_ENTITIES`) shared by every source file (none
        without source files)."""
        sources = list(self.inputs.source_file) if isdefined(self.inputs.source_file) else []
        parsed = [parse_name(path)[0] for path in sources]
        return {key: parsed[0][key] for key in SOURCE_ENTITIES
                if parsed and key in parsed[0] and all(p.get(key) == parsed[0][key] for p in parsed[1:])}

    @staticmethod
    def _file_fields(meta: dict, by_entity: dict, entities: dict) -> dict:
        """``meta`` with the fields ``by_entity`` gives for this file's entity values (provenance last)."""
        fields = {k: v for k, v in meta.items() if k not in ("Sources", "GeneratedBy")}
        for key, by_value in sorted(by_entity.items()):
            value = entities.get(key)
            if value is None or str(value) not in by_value:
                raise ValueError(f"no sidecar fields for {key}-{value} among {sorted(by_value)}")
            fields.update(by_value[str(value)])
        return dict(fields, Sources=meta["Sources"], GeneratedBy=meta["GeneratedBy"])

    def _sidecar_fields(self) -> dict:
        """Fields of the computing node's JSON, then the given ones, then provenance."""
        inputs = self.inputs
        meta = {}
        if isdefined(inputs.metadata_file):
            meta.update(json.loads(Path(inputs.metadata_file).read_text()))
        meta.update(inputs.meta_dict if isdefined(inputs.meta_dict) else {})
        meta.update(self._metadata)
        links = inputs.source_links if isdefined(inputs.source_links) else {}
        sources = inputs.sources if isdefined(inputs.sources) else []
        meta["Sources"] = sorted(bids_uri(f, links) for f in sources)
        meta["GeneratedBy"] = {"Name": "ketflow", "Version": __version__, "ConfigHash": inputs.config_hash}
        return meta


class DerivativesSink(DerivativesDataSink):
    """:class:`DerivativesDataSink` with the earlier call signature, used by the group level.

    ``out_dir`` is the base directory, ``entities`` a dict of entity values, ``metadata`` the
    sidecar fields, ``source_files`` the provenance files.
    """

    def __init__(self, out_dir: str, entities: dict | None = None, metadata: dict | None = None,
                 source_files: list | None = None, **inputs):
        super().__init__(base_directory=out_dir, meta_dict=metadata or {}, sources=list(source_files or []),
                         **inputs)
        for key, value in (entities or {}).items():
            setattr(self.inputs, key, value)
