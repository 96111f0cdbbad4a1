"""RenderConfig: one source of defaults, checked values, TOML and did-you-mean errors."""

from __future__ import annotations

import pytest

from styleforge.engine import ConfigError, RenderConfig, load_config_file


def test_defaults_are_valid_and_round_trip_through_a_dict():
    config = RenderConfig()
    assert config.model == "vgg16-hed" and config.optimizer == "lbfgs"
    assert RenderConfig.from_mapping(config.to_dict()) == config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"size": 0}, "--size: must be at least 1"),
        ({"iterations": -5}, "--iterations: -5 is neither a count"),
        ({"style_weight": -1.0}, "--style-weight: must be a finite number >= 0"),
        ({"tv_weight": float("nan")}, "--tv-weight"),
        ({"optimizer": "lbgfs"}, "did you mean 'lbfgs'"),
        ({"pooling": "mean"}, "choose one of max, avg"),
        ({"model": "vgg20"}, "--model: unknown value 'vgg20'"),
        ({"device": "gpu"}, "--device"),
        ({"style_layers": ("relu6_1",)}, "--style-layers"),
        ({"style_layers": ()}, "at least one layer"),
        ({"style_layer_weights": (1.0, 2.0)}, "2 values for 5 style layers"),
        ({"style_blend": (0.0, 0.0)}, "not all zero"),
        ({"init": "photo.jpg"}, "--init: 'photo.jpg' is neither"),
        ({"learning_rate": 0.0}, "--learning-rate"),
        ({"size": "4kx2k"}, "--size: '4kx2k' is neither"),
        ({"size": "0x100"}, "--size: must be at least 1 pixel"),
        ({"iterations": "500,0"}, "--iterations: '500,0' is neither"),
        ({"iterations": (100, 50), "levels": 3}, "--iterations: 2 per-level counts for --levels 3"),
        ({"levels": -1}, "--levels: must be >= 0"),
        ({"level_scale": 1.0}, "--level-scale"),
        ({"iteration_decay": 0.0}, "--iteration-decay"),
        ({"precision": "fp8"}, "--precision: unknown value 'fp8'"),
    ],
)
def test_bad_values_name_the_option(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RenderConfig(**changes)


def test_relu5_4_exists_only_in_vgg19():
    RenderConfig(model="vgg19", style_layers=("relu5_4",))
    with pytest.raises(ConfigError, match="vgg16"):
        RenderConfig(model="vgg16", style_layers=("relu5_4",))


def test_from_mapping_accepts_kebab_case_and_strings():
    config = RenderConfig.from_mapping(
        {"style-weight": 5, "style_layers": "relu1_1, relu2_1", "style-layer-weights": "1,3", "original-colors": True}
    )
    assert config.style_weight == 5.0 and isinstance(config.style_weight, float)
    assert config.style_layers == ("relu1_1", "relu2_1")
    assert config.style_layer_weights == (1.0, 3.0)
    assert config.original_colors is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"style_wieght": 1}, "unknown option 'style_wieght' (did you mean 'style_weight'?)"),
        ({"size": "big"}, "--size: 'big' is neither"),
        ({"original_colors": "yes"}, "must be true or false"),
        ({"style_weight": [1]}, "must be a number"),
    ],
)
def test_from_mapping_rejects_bad_keys_and_types(values, message):
    with pytest.raises(ConfigError) as caught:
        RenderConfig.from_mapping(values, source="render.toml")
    assert message in str(caught.value) and str(caught.value).startswith("render.toml: ")


def test_toml_file_at_top_level_or_in_a_render_table(tmp_path):
    path = tmp_path / "render.toml"
    path.write_text('size = 256\n[render]\nstyle-weight = 12.5\nstyle_layers = ["relu1_1", "relu3_1"]\n')
    options = load_config_file(path)
    config = RenderConfig.from_mapping(options)
    assert (config.size, config.style_weight, config.style_layers) == (256, 12.5, ("relu1_1", "relu3_1"))


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("size = = 3")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_config_file(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "absent.toml")


def test_learning_rate_default_depends_on_the_optimizer():
    assert RenderConfig().resolved_learning_rate == 1.0
    assert RenderConfig(optimizer="adam").resolved_learning_rate == 0.02
    assert RenderConfig(optimizer="adam", learning_rate=0.1).resolved_learning_rate == 0.1


def test_size_is_a_long_side_or_a_frame():
    assert RenderConfig(size="4096").size == 4096
    assert RenderConfig(size="3840x2160").size == (3840, 2160)
    assert RenderConfig.from_mapping({"size": [3840, 2160]}).size == (3840, 2160)
    assert RenderConfig(size="3840x2160").to_dict()["size"] == [3840, 2160]


def test_automatic_pyramid_starts_near_256_and_grows_by_sqrt2():
    config = RenderConfig(size=2048)
    shapes = config.level_shapes((768, 1024))
    assert shapes[-1] == (1536, 2048) and max(shapes[0]) == 256 and len(shapes) == 7
    for (h0, w0), (h1, w1) in zip(shapes, shapes[1:]):
        assert w1 / w0 == pytest.approx(2**0.5, rel=0.01)
    # The full count up to 1024 px, then halving per level (the same time per level), never
    # below a quarter of it.
    assert config.level_iterations() == [100, 100, 100, 100, 100, 50, 25]
    assert RenderConfig(size=2048, iterations=400).level_iterations()[-3:] == [400, 200, 100]
    assert RenderConfig(size=256).level_count == 1
    frame = RenderConfig(size="3840x2160").level_shapes(None)
    assert frame[-1] == (2160, 3840) and 200 <= max(frame[0]) <= 300


def test_explicit_levels_and_per_level_iterations():
    config = RenderConfig(size=512, levels=2, iterations="300,40")
    assert config.level_shapes((384, 512)) == [(272, 362), (384, 512)] and config.level_iterations() == [300, 40]
    assert RenderConfig(iterations=(200, 100, 50)).level_count == 3
    assert RenderConfig.mrf().level_shapes((288, 384)) == [(72, 96), (144, 192), (288, 384)]
    assert RenderConfig.mrf().level_iterations() == [100, 100, 100]
