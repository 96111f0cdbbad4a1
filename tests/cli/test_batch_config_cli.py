"""styleforge batch: --config (under the manifest and the command line), --quiet, --option's
errors, and where the report of a --glob batch goes."""

from __future__ import annotations

import json

import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.cli import app
from styleforge.engine import read_metadata

runner = CliRunner()
TINY = 'model = "vgg16-random"\ndevice = "cpu"\nlevels = 1\niterations = 2\n'


def _inputs(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for name in ("c0", "s"):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")


def test_glob_batch_with_config_quiet_and_report_beside_the_outputs(tmp_path, monkeypatch):
    _inputs(tmp_path)
    config = tmp_path / "batch.toml"
    config.write_text(TINY + "size = 48\nstyle_weight = 7.0\nquiet = true\n")
    monkeypatch.chdir(tmp_path)  # the working folder must stay clean: the report goes beside the outputs
    result = runner.invoke(app, ["batch", "--glob", "c*.png", "-s", "s.png", "-o", "out/{stem}.png",
                                 "--config", str(config), "--size", "32"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]  # quiet: the final line only
    assert "1 done" in result.output and str(tmp_path / "out" / "batch-report.json") in result.output
    assert not (tmp_path / "batch-report.json").exists()
    assert json.loads((tmp_path / "out" / "batch-report.json").read_text())["done"] == 1
    options = read_metadata(tmp_path / "out" / "c0.png")["config"]
    assert (options["size"], options["style_weight"], options["iterations"]) == (32, 7.0, 2)  # flag over file


def test_manifest_defaults_override_the_config_file(tmp_path):
    _inputs(tmp_path)
    config = tmp_path / "batch.toml"
    config.write_text(TINY + "size = 48\nstyle_weight = 7.0\n")
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(json.dumps({"defaults": {"size": 32}}) + "\n"
                        + json.dumps({"content": "c0.png", "style": "s.png", "output": "out/c0.png"}) + "\n")
    result = runner.invoke(app, ["batch", str(manifest), "--config", str(config)])
    assert result.exit_code == 0, result.output
    options = read_metadata(tmp_path / "out" / "c0.png")["config"]
    assert (options["size"], options["style_weight"]) == (32, 7.0)
    assert (tmp_path / "jobs.report.json").exists()  # a manifest's report stays beside it


def test_config_file_errors_name_the_file(tmp_path):
    _inputs(tmp_path)
    config = tmp_path / "batch.toml"
    config.write_text("styel_weight = 3\n")
    result = runner.invoke(app, ["batch", "--glob", str(tmp_path / "c*.png"), "-s", str(tmp_path / "s.png"),
                                 "-o", str(tmp_path / "{stem}_out.png"), "--config", str(config)])
    assert result.exit_code == 2
    assert str(config) in result.output and "did you mean 'style_weight'" in result.output


def test_an_unknown_option_names_its_option_not_the_glob(tmp_path):
    _inputs(tmp_path)
    result = runner.invoke(app, ["batch", "--glob", str(tmp_path / "c*.png"), "-s", str(tmp_path / "s.png"),
                                 "-o", str(tmp_path / "{stem}_out.png"), "--option", "siz=64"])
    assert result.exit_code == 2
    assert "--option siz=64: unknown option 'siz' (did you mean 'size'?)" in result.output
    assert "--glob" not in result.output and "line" not in result.output


def test_verbose_and_quiet_together_are_refused(tmp_path):
    result = runner.invoke(app, ["batch", "--glob", "x*.png", "-q", "-v"])
    assert result.exit_code == 2 and "--quiet" in result.output
