"""Export the VGG forward (taps + saved masks) and backward graphs to ONNX, cached.

Exports are keyed by model, weights hash, taps, pooling and opset (and this module's format
version), and land in ``<cache>/onnx/<key>/`` as ``forward.onnx``, ``backward.onnx`` and
``meta.json``, written into a temporary folder and renamed into place, so a crash never leaves
half an export that a later run would trust.

The TorchScript-based exporter is used on purpose: with ``dynamic_axes`` it exports a graph
valid for every height and width, odd ones included (pooling floors as in torch), where the
dynamo exporter only generalises to multiples of 16.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._backbone import ARCHITECTURES, VGGFeatures
from .._errors import BackendUnavailableError
from .._files import atomic_write, cache_dir, move_aside, sha256_file
from .._wait import waiting
from ._vjp import VGGBackward, VGGForwardWithMasks, saved_mask_layers, typed_copy

__all__ = ["DEFAULT_OPSET", "ExportedGraphs", "export_onnx", "weights_digest"]

DEFAULT_OPSET = 17
_FORMAT_VERSION = 4  # bump when the exported graphs change
#: Types an export's convolutions may run in (the graphs' inputs and outputs are float32 always);
#: not bf16: ONNX's Conv takes bfloat16 only from opset 22, beyond the TorchScript exporter.
EXPORT_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def weights_digest(backbone: VGGFeatures) -> str:
    """sha256 over the backbone's parameters (names, shapes, bytes): part of every cache key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ExportedGraphs:
    """Where an export lives and how its inputs and outputs are named."""

    folder: Path
    taps: tuple[str, ...]
    masks: tuple[str, ...]
    strides: dict[str, int]  # layer name -> stride of its output relative to the image
    channels: dict[str, int]  # layer name -> channels of its output

    def shape_of(self, name: str, height: int, width: int) -> tuple[int, int, int, int]:
        """Shape of a graph tensor (image, tap, mask_*, grad_*) for a (height, width) image.

        A ReLU's mask has its output's shape; a max pool's is window-major (4C at its output's
        size, see max_pool_first_max_mask)."""
        if name in ("image", "image_grad"):
            return (1, 3, height, width)
        layer = name.split("_", 1)[1] if name.startswith(("mask_", "grad_")) else name
        stride = self.strides[layer]
        while stride > 1:  # floor pooling: one halving per pool
            height, width, stride = height // 2, width // 2, stride // 2
        factor = 4 if name.startswith("mask_pool") else 1
        return (1, factor * self.channels[layer], height, width)

    @property
    def forward_path(self) -> Path:
        return self.folder / "forward.onnx"

    @property
    def backward_path(self) -> Path:
        return self.folder / "backward.onnx"

    @property
    def forward_outputs(self) -> tuple[str, ...]:
        return tuple(self.taps) + tuple(f"mask_{name}" for name in self.masks)

    @property
    def backward_inputs(self) -> tuple[str, ...]:
        return tuple(f"mask_{name}" for name in self.masks) + tuple(f"grad_{name}" for name in self.taps)


def _key(model: str, digest: str, backbone: VGGFeatures, opset: int, dtype: str) -> str:
    spec = json.dumps([_FORMAT_VERSION, model, digest, backbone.arch, list(backbone.taps), backbone.pooling,
                       opset, dtype, torch.__version__.split("+")[0]])
    return f"{model}-{backbone.pooling}-{dtype}-opset{opset}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


def export_onnx(backbone: VGGFeatures, *, model: str, opset: int = DEFAULT_OPSET, dtype: str = "fp32",
                folder: Path | None = None, force: bool = False) -> ExportedGraphs:
    """Export (or find in the cache) the forward and backward graphs of ``backbone``.

    Graphs have dynamic height and width, float32 inputs and outputs, and convolutions in
    ``dtype`` (fp32 or fp16): a typed export says in its own types where half precision
    runs, which is how TensorRT 10+ strongly typed networks take it (they have no precision flags).
    """
    try:
        import onnx
    except ImportError:
        raise BackendUnavailableError("ONNX export needs the 'onnx' package: pip install onnx") from None

    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, got {dtype!r}")
    if backbone.arch not in ARCHITECTURES:
        raise BackendUnavailableError(f"--model {model}: the exported forward + backward graphs are VGG's; "
                                      f"{backbone.arch} exports its forward alone (torch.onnx.export of the backbone)")
    # A copy: .float(), .cpu() and .eval() change a module in place, and the caller's backbone
    # (on the GPU, perhaps in another dtype, perhaps training) must stay as it was.
    backbone = copy.deepcopy(backbone).float().cpu().eval()
    digest = weights_digest(backbone)
    if dtype != "fp32":
        backbone = typed_copy(backbone, EXPORT_DTYPES[dtype])
    mask_layers = saved_mask_layers(backbone)
    strides = {info.name: info.stride for info in backbone.layers}
    if folder is None:
        folder = cache_dir() / "onnx" / _key(model, digest, backbone, opset, dtype)
    graphs = ExportedGraphs(folder=folder, taps=tuple(backbone.taps), masks=tuple(i.name for i in mask_layers),
                            strides=strides, channels={info.name: info.channels for info in backbone.layers})
    if not force and _export_is_intact(graphs):
        if _export_loads(onnx, graphs):
            return graphs
        move_aside(folder)  # its checksums match files that do not load: rebuilt below, kept to look at

    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        staged = dataclasses.replace(graphs, folder=scratch)
        sample = torch.rand(1, 3, 64, 64)
        forward = VGGForwardWithMasks(backbone)
        with torch.no_grad():
            outputs = forward(sample)
        count = len(backbone.taps)
        dynamic = {"image": {2: "height", 3: "width"}}
        dynamic.update({name: {2: f"h_{name}", 3: f"w_{name}"} for name in staged.forward_outputs})
        with waiting(f"exporting {model}'s forward and backward to ONNX (once)"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(forward, (sample,), str(staged.forward_path), dynamo=False, opset_version=opset,
                                  input_names=["image"], output_names=list(staged.forward_outputs),
                                  dynamic_axes=dynamic, do_constant_folding=True)
                backward_args = tuple(outputs[count:]) + tuple(torch.randn_like(t) for t in outputs[:count])
                dynamic_back = {name: {2: f"h_{name}", 3: f"w_{name}"} for name in staged.backward_inputs}
                dynamic_back["image_grad"] = {2: "height", 3: "width"}
                torch.onnx.export(VGGBackward(backbone), backward_args, str(staged.backward_path), dynamo=False,
                                  opset_version=opset, input_names=list(staged.backward_inputs),
                                  output_names=["image_grad"], dynamic_axes=dynamic_back, do_constant_folding=True)
            for path in (staged.forward_path, staged.backward_path):
                onnx.checker.check_model(str(path), full_check=True)
        meta = {"model": model, "opset": opset, "dtype": dtype, "taps": list(backbone.taps),
                "pooling": backbone.pooling,
                "sha256": {name: sha256_file(scratch / f"{name}.onnx") for name in ("forward", "backward")}}
        atomic_write(scratch / "meta.json", json.dumps(meta, indent=2).encode())
        _move_into_place(scratch, folder, graphs)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return graphs



def _move_into_place(scratch: Path, folder: Path, graphs: ExportedGraphs) -> None:
    """Rename the finished export into place. Several workers may export the same graphs at
    once: whoever lands first wins and the others drop their copy; only a stale (incomplete or
    modified) folder is moved aside and replaced, never one another process has just written."""
    try:
        os.rename(scratch, folder)  # fails if the folder exists (non-empty)
        return
    except OSError:
        if _export_is_intact(graphs):
            shutil.rmtree(scratch, ignore_errors=True)
            return
    stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.stale.", dir=folder.parent))
    try:
        os.replace(folder, stale / "old")
    except FileNotFoundError:
        pass
    try:
        os.rename(scratch, folder)
    except OSError:  # another process replaced it meanwhile: theirs is as good as ours
        shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(stale, ignore_errors=True)


def _export_loads(onnx: Any, graphs: ExportedGraphs) -> bool:
    """True when both graphs parse and name the outputs this export needs. The checksums in
    meta.json only say the files are those it recorded: a file cut short with a meta.json to
    match (a copy or a sync that stopped) passes them and then fails inside onnxruntime."""
    try:
        for path, outputs in ((graphs.forward_path, graphs.forward_outputs), (graphs.backward_path, ("image_grad",))):
            model = onnx.load(str(path))
            if tuple(output.name for output in model.graph.output) != tuple(outputs):
                return False
    except Exception:  # noqa: BLE001  (protobuf's DecodeError and onnx's own: anything that fails to load)
        return False
    return True


def _export_is_intact(graphs: ExportedGraphs) -> bool:
    """True when the cached export is complete and unmodified (a stale entry is rebuilt)."""
    try:
        recorded = json.loads((graphs.folder / "meta.json").read_text())["sha256"]
        return all(sha256_file(graphs.folder / f"{name}.onnx") == recorded[name] for name in ("forward", "backward"))
    except (OSError, ValueError, KeyError):
        return False
