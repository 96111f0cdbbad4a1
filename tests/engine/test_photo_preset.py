"""The photorealistic preset, one definition used by the API, from_options and manifests: it
fills what is not given and never overrides what is."""

from __future__ import annotations

import json

import pytest
import torch

from styleforge.engine import PHOTO_PRESET, ConfigError, RenderConfig
from styleforge.engine.batch import load_manifest
from styleforge.engine.rendering import prepare_inputs


def _flat(config: RenderConfig) -> dict:
    return config.to_dict()


def test_the_api_the_preset_function_and_from_options_agree():
    api, preset, options = RenderConfig(photo=True), RenderConfig.photo_defaults(), RenderConfig.from_options(
        {"photo": True})
    assert api == preset == options
    for name, value in PHOTO_PRESET.items():
        assert _flat(api)[name] == (list(value) if isinstance(value, tuple) else value), name
    assert RenderConfig().objective.photo_weight == 0.0  # off unless asked for


@pytest.mark.parametrize("given", [{"tv_weight": 1.5}, {"photo_weight": 3.0}, {"init": "noise"}])
def test_explicit_options_override_the_preset_everywhere(given):
    for config in (RenderConfig(photo=True, **given), RenderConfig.photo_defaults(**given),
                   RenderConfig.from_options({"photo": True, **given}),
                   RenderConfig.from_options({**given, "photo": True})):
        assert config.objective.photo and all(_flat(config)[key] == value for key, value in given.items())


def test_the_preset_round_trips_through_the_dict_outputs_embed():
    config = RenderConfig.from_options({"photo": True, "tv_weight": 0.25, "size": 64})
    assert RenderConfig.from_options(config.to_dict()) == config


def test_mrf_with_photo_takes_the_preset_over_cnnmrfs_defaults():
    config = RenderConfig.from_options({"method": "mrf", "photo": True})
    assert config.objective.method == "mrf" and config.pyramid.levels == 3  # CNNMRF's schedule stays
    assert config.objective.photo_weight == PHOTO_PRESET["photo_weight"]
    assert config.objective.tv_weight == PHOTO_PRESET["tv_weight"]  # the preset's, not CNNMRF's 2.0


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan")])
def test_a_bad_photo_weight_names_the_field(value):
    with pytest.raises(ConfigError, match="photo_weight: must be a finite number >= 0"):
        RenderConfig(photo_weight=value)


def test_the_term_needs_a_content_photo():
    with pytest.raises(ConfigError, match="photo_weight: the photorealism term is built from the content"):
        prepare_inputs(RenderConfig(photo_weight=1.0), None, [torch.rand(3, 32, 32)])


def test_a_manifest_line_with_photo_gets_the_preset_under_its_own_options(tmp_path):
    for name in ("a.png", "s.png"):
        (tmp_path / name).write_bytes(b"")  # the manifest checks that inputs exist, not what they hold
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in [
        {"defaults": {"photo": True}},
        {"content": "a.png", "style": "s.png", "output": "out/a.png"},
        {"content": "a.png", "style": "s.png", "output": "out/b.png", "content_weight": 2.0},
        {"content": "a.png", "style": "s.png", "output": "out/c.png", "photo": False},
    ]) + "\n")
    preset, overridden, plain = (job.config for job in load_manifest(path))
    assert preset == RenderConfig(photo=True)
    assert overridden == RenderConfig(photo=True, content_weight=2.0)
    assert plain == RenderConfig()
