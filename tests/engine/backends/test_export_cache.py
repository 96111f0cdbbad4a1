"""Issue 25, item 10: a cached export cut short, with a meta.json that matches it, is moved aside
and rebuilt (as cached weights are), never handed to onnxruntime; a cache folder that is a file
is bad input naming the variable."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from styleforge.engine import InputError, load_backbone
from styleforge.engine._files import cache_dir
from styleforge.engine.backends import OnnxRuntimeBackend, export_onnx

onnx = pytest.importorskip("onnx", reason="the exported graphs need onnx")
pytest.importorskip("onnxruntime", reason="the exported graphs run on onnxruntime")


def test_a_truncated_export_with_matching_checksums_is_moved_aside_and_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path / "cache"))
    backbone = load_backbone("vgg16-random", ("relu1_1",), seed=0)
    graphs = export_onnx(backbone, model="vgg16-random")
    data = graphs.forward_path.read_bytes()
    graphs.forward_path.write_bytes(data[:len(data) // 2])  # a copy that stopped halfway ...
    meta = json.loads((graphs.folder / "meta.json").read_text())
    meta["sha256"]["forward"] = hashlib.sha256(data[:len(data) // 2]).hexdigest()  # ... with its meta.json
    (graphs.folder / "meta.json").write_text(json.dumps(meta))

    backend = OnnxRuntimeBackend(backbone, torch.device("cpu"), model="vgg16-random")
    assert backend.graphs.forward_path.read_bytes() == data
    aside = [p for p in graphs.folder.parent.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and (aside[0] / "forward.onnx").stat().st_size == len(data) // 2


def test_a_cache_folder_that_is_a_file_is_bad_input_naming_the_variable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    for value in (tmp_path / "file", tmp_path / "file" / "below"):
        monkeypatch.setenv("STYLEFORGE_CACHE", str(value))
        with pytest.raises(InputError, match=r"STYLEFORGE_CACHE: .*file is a file, not a folder"):
            cache_dir()
