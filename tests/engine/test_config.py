"""RenderConfig: one source of defaults, checked values, TOML and did-you-mean errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from styleforge.engine import ConfigError, RenderConfig, load_config_file


def test_defaults_are_valid_and_round_trip_through_a_dict():
    config = RenderConfig()
    assert config.runtime.model == "vgg19-oxford-8bit" and config.optimization.optimizer == "lbfgs"
    assert RenderConfig.from_options(config.to_dict()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": 0}, "size: must be at least 1"),
        ({"iterations": -5}, "iterations: -5 is neither a count"),
        ({"style_weight": -1.0}, "style_weight: must be a finite number >= 0"),
        ({"tv_weight": float("nan")}, "tv_weight"),
        ({"optimizer": "lbgfs"}, "did you mean 'lbfgs'"),
        ({"pooling": "mean"}, "choose one of max, avg"),
        ({"model": "vgg20"}, "model: unknown value 'vgg20'"),
        ({"device": "gpu"}, "device"),
        ({"style_layers": ("relu6_1",)}, "style_layers"),
        ({"style_layers": ()}, "at least one layer"),
        ({"style_layer_weights": (1.0, 2.0)}, "2 values for 4 style layers"),
        ({"style_blend": (0.0, 0.0)}, "not all zero"),
        ({"init": "photo.jpg"}, "init: 'photo.jpg' is neither"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"size": "4kx2k"}, "size: '4kx2k' is neither"),
        ({"size": "0x100"}, "size: must be at least 1 pixel"),
        ({"iterations": "500,0"}, "iterations: '500,0' is neither"),
        ({"iterations": (100, 50), "levels": 3}, "iterations: 2 per-level counts for levels = 3"),
        ({"levels": -1}, "levels: must be at least 0"),
        ({"level_scale": 1.0}, "level_scale"),
        ({"iteration_decay": 0.0}, "iteration_decay"),
        ({"precision": "fp8"}, "precision: unknown value 'fp8'"),
    ],
)
def test_bad_values_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RenderConfig(**changes)


def test_relu5_4_exists_only_in_vgg19():
    RenderConfig(model="vgg19", style_layers=("relu5_4",))
    with pytest.raises(ConfigError, match="vgg16"):
        RenderConfig(model="vgg16", style_layers=("relu5_4",))


def test_from_options_accepts_kebab_case_and_strings():
    config = RenderConfig.from_options(
        {"style-weight": 5, "style_layers": "relu1_1, relu2_1", "style-layer-weights": "1,3", "original-colors": True}
    )
    objective = config.objective
    assert objective.style_weight == 5.0 and isinstance(objective.style_weight, float)
    assert objective.style_layers == ("relu1_1", "relu2_1")
    assert objective.style_layer_weights == (1.0, 3.0)
    assert objective.original_colors is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"style_wieght": 1}, "unknown option 'style_wieght' (did you mean 'style_weight'?)"),
        ({"size": "big"}, "size: 'big' is neither"),
        ({"original_colors": "yes"}, "must be true or false"),
        ({"style_weight": [1]}, "must be a number"),
    ],
)
def test_from_options_rejects_bad_keys_and_types(values, message):
    with pytest.raises(ConfigError) as caught:
        RenderConfig.from_options(values, source="render.toml")
    assert message in str(caught.value) and str(caught.value).startswith("render.toml: ")


def test_toml_file_at_top_level_or_in_a_render_table(tmp_path):
    path = tmp_path / "render.toml"
    path.write_text('size = 256\n[render]\nstyle-weight = 12.5\nstyle_layers = ["relu1_1", "relu3_1"]\n')
    options = load_config_file(path)
    config = RenderConfig.from_options(options)
    assert (config.pyramid.size, config.objective.style_weight, config.objective.style_layers) == (
        256, 12.5, ("relu1_1", "relu3_1"))


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("size = = 3")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "absent.toml")


def test_learning_rate_default_depends_on_the_optimizer():
    assert RenderConfig().optimization.resolved_learning_rate == 1.0
    assert RenderConfig(optimizer="adam").optimization.resolved_learning_rate == 0.02
    assert RenderConfig(optimizer="adam", learning_rate=0.1).optimization.resolved_learning_rate == 0.1


def test_size_is_a_long_side_or_a_frame():
    assert RenderConfig(size="4096").pyramid.size == 4096
    assert RenderConfig(size="3840x2160").pyramid.size == (3840, 2160)
    assert RenderConfig.from_options({"size": [3840, 2160]}).pyramid.size == (3840, 2160)
    assert RenderConfig(size="3840x2160").to_dict()["size"] == [3840, 2160]


def test_automatic_pyramid_starts_near_256_and_grows_by_sqrt2():
    config = RenderConfig(size=2048)
    shapes = config.pyramid.level_shapes((768, 1024))
    assert shapes[-1] == (1536, 2048) and max(shapes[0]) == 256 and len(shapes) == 7
    for (h0, w0), (h1, w1) in zip(shapes, shapes[1:]):
        assert w1 / w0 == pytest.approx(2**0.5, rel=0.01)
    # The full count up to 1024 px, then halving per level (the same time per level), never
    # below a quarter of it.
    assert config.pyramid.level_iterations() == [100, 100, 100, 100, 100, 50, 25]
    assert RenderConfig(size=2048, iterations=400).pyramid.level_iterations()[-3:] == [400, 200, 100]
    assert RenderConfig(size=256).pyramid.level_count == 1
    frame = RenderConfig(size="3840x2160").pyramid.level_shapes(None)
    assert frame[-1] == (2160, 3840) and 200 <= max(frame[0]) <= 300


def test_explicit_levels_and_per_level_iterations():
    config = RenderConfig(size=512, levels=2, iterations="300,40")
    pyramid = config.pyramid
    assert pyramid.level_shapes((384, 512)) == [(272, 362), (384, 512)] and pyramid.level_iterations() == [300, 40]
    assert RenderConfig(iterations=(200, 100, 50)).pyramid.level_count == 3
    mrf = RenderConfig.mrf_defaults().pyramid
    assert mrf.level_shapes((288, 384)) == [(72, 96), (144, 192), (288, 384)]
    assert mrf.level_iterations() == [100, 100, 100]


def test_the_config_is_composed_of_groups_that_check_themselves():
    from styleforge.engine._config import MemoryConfig, PyramidConfig

    config = RenderConfig(pyramid=PyramidConfig(size=1024, levels=2), style_weight=5.0)
    assert config.pyramid.size == 1024 and config.pyramid.levels == 2 and config.objective.style_weight == 5.0
    assert config == RenderConfig(size=1024, levels=2, style_weight=5.0)
    with pytest.raises(ConfigError, match="tile_size: must be at least 0"):
        MemoryConfig(tile_size=-1)
    with pytest.raises(ConfigError) as caught:
        PyramidConfig(level_scale=9.0)
    assert caught.value.field == "level_scale"
    # Every field belongs to exactly one group, under one flat name.
    assert len(RenderConfig.FIELDS) == len(set(RenderConfig.FIELDS)) == len(RenderConfig().to_dict())


def test_errors_name_the_field_and_the_file_a_value_came_from():
    with pytest.raises(ConfigError) as caught:
        RenderConfig().replace({"style-weight": -1}, source="job.toml")
    assert (caught.value.field, caught.value.source) == ("style_weight", "job.toml")
    assert str(caught.value) == "job.toml: style_weight: must be a finite number >= 0, got -1.0"
    assert caught.value.describe("--style-weight") == "job.toml: --style-weight: must be a finite number >= 0, got -1.0"


def test_both_methods_default_to_the_original_vgg19_and_an_explicit_model_wins():
    """The quality sheets favour vgg19-oxford-8bit for Gram and MRF. Every way in (the API's
    preset, options as the CLI, TOML and manifests give them) agrees, and --model overrides."""
    assert RenderConfig().runtime.model == "vgg19-oxford-8bit"
    assert RenderConfig.mrf_defaults().runtime.model == "vgg19-oxford-8bit"
    assert RenderConfig.from_options({"method": "mrf"}).runtime.model == "vgg19-oxford-8bit"
    assert RenderConfig.from_options({"method": "mrf", "model": "vgg16-hed"}).runtime.model == "vgg16-hed"
    assert RenderConfig.from_options({"method": "gram"}).runtime.model == "vgg19-oxford-8bit"


def test_the_style_weight_where_none_is_given_is_the_one_chosen_for_the_model_and_loss():
    """Gram on the original VGG19 was judged at 200, everything else at 1e3 (vgg16-hed's tuning,
    NNST on VGG19): the API, from_options (CLI, TOML, manifests) and a changed model agree, and a
    weight given explicitly always wins, even one equal to another model's default."""
    assert RenderConfig().objective.style_weight == 200
    assert RenderConfig(model="vgg16-hed").objective.style_weight == 1e3
    assert RenderConfig(style_loss="nnst").objective.style_weight == 1e3
    for options, weight in [({}, 200), ({"model": "vgg16-hed"}, 1e3), ({"style-loss": "nnst"}, 1e3),
                            ({"style_loss": "w2"}, 1e3), ({"model": "vgg16-hed", "style_weight": 200}, 200),
                            ({"style_weight": 1e3}, 1e3), ({"photo": True}, 1e4), ({"method": "mrf"}, 1e3)]:
        assert RenderConfig.from_options(options).objective.style_weight == weight, options
    # the groups' own default is the default render's
    assert RenderConfig(objective=RenderConfig().objective).objective.style_weight == 200


def test_outputs_made_with_the_old_default_model_are_matched_by_naming_it():
    """Batch and video outputs carry a hash of every option, defaults included. Until 2026-12-06
    the default was vgg16-hed at style weight 1e3: naming the model in a manifest's defaults gives
    exactly those options back (README, Batch jobs), so a rerun recognises what was made then."""
    old = RenderConfig.from_options({"model": "vgg16-hed"}).hashed()
    assert old == RenderConfig().hashed() | {"model": "vgg16-hed", "style_weight": 1e3}
    # The old default's options, hashed by the code of 2026-12-05 (commit f1d8a3d). When another
    # default changes, this fails: README's advice on matching old outputs needs that change too.
    digest = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()
    assert digest == "084fb34f8fcfe5ec5be618e3b298015d281d870bac0edc5e39b1b90beb29ab5d"


def test_replace_keeps_the_style_weight_and_from_options_chooses_it():
    """replace() is a copy with the given values: a new model keeps the weight it had (documented);
    from_options, what the CLI, TOML and manifests use, chooses the model's own."""
    assert RenderConfig().replace({"model": "vgg16-hed"}).objective.style_weight == 200
    assert RenderConfig.from_options({"model": "vgg16-hed"}).objective.style_weight == 1e3


def test_the_style_weight_help_states_every_default_it_can_have():
    from styleforge.engine import PHOTO_PRESET

    show = RenderConfig.field_help("style_weight")["show"]
    for weight in (RenderConfig().objective.style_weight, RenderConfig(model="vgg16-hed").objective.style_weight,
                   PHOTO_PRESET["style_weight"]):
        assert f"{weight:g}" in show, weight
