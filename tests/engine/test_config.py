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
        ({"iterations": -5}, "--iterations: must be at least 1"),
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
        ({"size": "big"}, "size must be an integer"),
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
