"""Every option a manifest gives reaches the backend its job runs on, and a worker shares one
backend only among jobs that asked for the same one."""

from __future__ import annotations

import json

import torch
from PIL import Image

from styleforge.engine import load_manifest, run_batch
from styleforge.engine.backends import BACKEND_TYPES, TorchBackend


class _Recorded(TorchBackend):
    """A torch backend that records how it was asked for (CUDA graphs and TensorRT's sizes are
    recorded, then run eagerly on the CPU)."""

    built: list[dict] = []

    def __init__(self, backbone, device, precision, *, cuda_graphs=False, model=None, sizes=None, compile=False,
                 winograd=False):
        type(self).built.append({"kind": self.kind, "precision": precision.name, "cuda_graphs": cuda_graphs,
                                 "sizes": sizes, "model": model, "device": str(device)})
        super().__init__(backbone, device, precision)

    @classmethod
    def unsupported(cls, precision, device):
        return None


class _RecordedTorch(_Recorded):
    kind = "torch"


class _RecordedTensorRT(_Recorded):
    kind = "tensorrt"


def test_manifest_options_reach_the_backend(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKEND_TYPES, "torch", _RecordedTorch)
    monkeypatch.setitem(BACKEND_TYPES, "tensorrt", _RecordedTensorRT)
    _Recorded.built = []
    generator = torch.Generator().manual_seed(0)
    for name in ("a", "s"):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    jobs = [
        {"defaults": {"model": "vgg19-random", "device": "cpu", "iterations": 1, "levels": 1}},
        {"content": "a.png", "style": "s.png", "output": "1.png", "size": 32, "backend": "torch",
         "precision": "bf16", "cuda_graphs": True},
        {"content": "a.png", "style": "s.png", "output": "2.png", "size": 32, "backend": "torch",
         "precision": "bf16", "cuda_graphs": True, "style_weight": 5},  # same backend: shared
        {"content": "a.png", "style": "s.png", "output": "3.png", "size": 32, "backend": "torch",
         "precision": "fp16"},  # another precision: its own backend
        {"content": "a.png", "style": "s.png", "output": "4.png", "size": 48, "levels": 2, "backend": "tensorrt",
         "precision": "fp16"},
    ]
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text("\n".join(json.dumps(job) for job in jobs) + "\n")
    outcomes = run_batch(load_manifest(manifest))
    assert [o.status for o in outcomes] == ["done"] * 4, [o.reason for o in outcomes]
    assert [(b["kind"], b["precision"], b["cuda_graphs"]) for b in _Recorded.built] == [
        ("torch", "bf16", True), ("torch", "fp16", False), ("tensorrt", "fp16", False)]
    # TensorRT's profile spans the job's own levels (48x36 after a 34x25 level: the content's aspect).
    assert _Recorded.built[2]["sizes"] == [(25, 34), (36, 48)]
    assert {b["model"] for b in _Recorded.built if b["kind"] == "tensorrt"} == {"vgg19-random"}
