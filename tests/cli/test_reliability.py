"""Issue 13 through the command line: nothing a user made is lost, every bad input gets one
clear line, and a batch survives any one job (numbered items of the issue, then the one-liners)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge import engine
from styleforge.cli import app
from styleforge.engine import RenderInterrupted, RenderResult, load_image, read_metadata

runner = CliRunner()
FAST = ["--model", "vgg19-random", "--device", "cpu", "--quiet", "--size", "32", "-n", "1"]
FAST_JOB = {"model": "vgg19-random", "device": "cpu", "size": 32, "iterations": 1}


@pytest.fixture
def photos(tmp_path):
    """c0..c2 (the user's photos) and s.png, tiny and distinct."""
    generator = torch.Generator().manual_seed(0)
    for index in range(3):
        pixels = (torch.rand(24, 32, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"c{index}.png")
    Image.fromarray((torch.rand(32, 32, 3, generator=generator) ** 2 * 255).byte().numpy()).save(tmp_path / "s.png")
    return tmp_path


def _jsonl(path: Path, lines) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def _one_line(result) -> str:
    """The single stderr line of a failed command (and no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# --- 1. a config's own-option values are type-checked ---------------------------------------------


def test_1_config_overwrite_as_a_string_is_refused_and_the_file_kept(photos):
    output = photos / "out.png"
    output.write_bytes(b"the user's file")
    config = photos / "render.toml"
    config.write_text('overwrite = "false"\n')
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"), "-o", str(output),
                                 "--config", str(config), *FAST])
    assert result.exit_code == 2
    assert "overwrite: must be true or false, got 'false'" in _one_line(result)
    assert output.read_bytes() == b"the user's file"


# --- 2. listing never changes the weights cache ------------------------------------------------


def test_2_models_listing_keeps_a_weights_file_without_its_sidecar():
    cached = Path(os.environ["STYLEFORGE_CACHE"]) / "weights" / "vgg16-hed.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not checked by a listing")
    before = _snapshot(cached.parent)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    assert _snapshot(cached.parent) == before


# --- 3. no job's output is another job's input --------------------------------------------------


def test_3_an_output_that_is_another_jobs_input_is_refused_even_with_overwrite(photos):
    (photos / "link.png").symlink_to(photos / "c1.png")
    manifest = _jsonl(photos / "jobs.jsonl", [
        {"defaults": FAST_JOB},
        {"content": "c0.png", "style": "s.png", "output": "link.png"},  # c1.png, through a symlink
        {"content": "c1.png", "style": "s.png", "output": "out/c1.png"},
    ])
    before = _snapshot(photos)
    result = runner.invoke(app, ["batch", str(manifest), "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "line 2" in result.output and "is an input of line 3" in result.output
    assert _snapshot(photos) == before


def test_3_render_refuses_to_write_over_its_own_input(photos):
    before = _snapshot(photos)
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "s.png"), "--overwrite", *FAST])
    assert result.exit_code == 2
    assert "is also an input" in _one_line(result)
    assert _snapshot(photos) == before


# --- 4. divergence is an error naming the option -------------------------------------------------


def test_4_adam_with_an_absurd_learning_rate_is_refused_naming_it(photos, monkeypatch):
    monkeypatch.setattr(engine, "render", lambda *a, **k: pytest.fail("rendered"))
    output = photos / "out.png"
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"), "-o", str(output),
                                 *FAST, "--optimizer", "adam", "--learning-rate", "1000"])
    assert result.exit_code == 2, result.output
    assert "--learning-rate: must be below 1 for adam" in _one_line(result)
    assert not output.exists()


def test_4_a_diverging_render_fails_naming_the_option_and_writes_nothing(photos):
    output = photos / "out.png"
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"), "-o", str(output),
                                 "--model", "vgg19-random", "--device", "cpu", "-q", "--size", "32", "-n", "3",
                                 "--learning-rate", "1000"])
    assert result.exit_code == 1, result.output
    line = _one_line(result)
    assert line.startswith("error: --learning-rate: the render diverged") and "pinned" in line
    assert not output.exists()


def test_4_a_learning_rate_that_can_only_diverge_is_refused_up_front(photos, monkeypatch):
    monkeypatch.setattr(engine, "render", lambda *a, **k: pytest.fail("rendered"))
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "out.png"), "--learning-rate", "inf", *FAST])
    assert result.exit_code == 2 and "--learning-rate" in _one_line(result)


# --- 5. an unwritable folder is found before any work; a failed write keeps the image --------------


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root ignores modes: /sys refuses even root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        (folder / "probe").touch()
    except OSError:
        return folder
    (folder / "probe").unlink()
    return Path("/sys")


def test_5_unwritable_output_folder_is_refused_before_any_work(photos, monkeypatch):
    monkeypatch.setattr(engine, "render", lambda *a, **k: pytest.fail("rendered before checking the folder"))
    folder = _unwritable_folder(photos)
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(folder / "out.png"), *FAST])
    assert result.exit_code == 2
    assert "cannot write" in _one_line(result)


def test_5_a_final_write_that_fails_keeps_the_image_in_the_cache(photos, monkeypatch):
    from styleforge.engine import _image

    real = _image.atomic_write

    def disk_full(target, data, **kwargs):
        if Path(target).parent == photos:
            raise OSError(28, "No space left on device")
        return real(target, data, **kwargs)

    monkeypatch.setattr(_image, "atomic_write", disk_full)
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "out.png"), *FAST])
    assert result.exit_code == 1
    line = _one_line(result)
    kept = Path(os.environ["STYLEFORGE_CACHE"]) / "recovered" / "out.png"
    assert "No space left on device" in line and str(kept) in line
    assert load_image(kept).shape == (3, 24, 32) and read_metadata(kept)["iterations_done"] == 1
    assert not (photos / "out.png").exists()


# --- 6. Ctrl-C stops a batch, writes its report, exits 130 --------------------------------------


def test_6_ctrl_c_in_a_batch_stops_it_writes_the_report_and_exits_130(photos, monkeypatch):
    from styleforge.engine.batch import _job

    calls = []

    def fake_render(config, content, styles, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RenderInterrupted(torch.zeros(3, 24, 32), iteration=1)
        return RenderResult(torch.full((3, 24, 32), 0.5), 1, {}, 0.0, 0, "cpu")

    monkeypatch.setattr(_job, "render", fake_render)
    manifest = _jsonl(photos / "jobs.jsonl", [{"defaults": FAST_JOB}] + [
        {"content": f"c{i}.png", "style": "s.png", "output": f"out/c{i}.png"} for i in range(3)])
    result = runner.invoke(app, ["batch", str(manifest)])
    assert result.exit_code == 130, result.output
    assert len(calls) == 2  # the third job never started
    report = json.loads((photos / "jobs.report.json").read_text())
    assert [job["status"] for job in report["jobs"]] == ["done", "interrupted", "not run"]
    assert report["stopped"] is True and (report["done"], report["interrupted"], report["not_run"]) == (1, 1, 1)
    assert "interrupted: 1 done, 0 skipped, 0 failed, 1 interrupted, 1 not run" in result.stderr
    assert sorted(p.name for p in (photos / "out").iterdir()) == ["c0.png"]


def _spawned_workers(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_6_ctrl_c_with_workers_stops_and_a_second_ctrl_c_stops_at_once(photos):
    """Workers that cannot answer (stopped): the first Ctrl-C waits for them, the second ends it."""
    manifest = _jsonl(photos / "jobs.jsonl", [{"defaults": {**FAST_JOB, "iterations": 100000}}] + [
        {"content": f"c{i}.png", "style": "s.png", "output": f"out/c{i}.png"} for i in range(3)])
    process = subprocess.Popen([sys.executable, "-m", "styleforge.cli", "batch", str(manifest), "--workers", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert _wait_for(lambda: len(_spawned_workers(process.pid)) == 2, 120)
        time.sleep(4)  # let the workers get going (stopped mid-import or mid-render, they cannot answer)
        for pid in _spawned_workers(process.pid):
            os.kill(pid, signal.SIGSTOP)
        process.send_signal(signal.SIGINT)
        time.sleep(1)
        assert process.poll() is None  # still waiting for its workers
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    report = json.loads((photos / "jobs.report.json").read_text())
    assert report["stopped"] is True and report["done"] == 0
    assert not list((photos / "out").glob("*.png")) if (photos / "out").exists() else True


# --- 7. render clears what a killed save left behind -------------------------------------------


def test_7_render_removes_a_killed_saves_temporary(photos):
    stale = photos / ".out.png.k2x9a1.tmp"  # what atomic_write leaves when killed before its rename
    stale.write_bytes(b"\0" * 4096)
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "out.png"), *FAST])
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    assert sorted(p.name for p in photos.glob(".*")) == []


# --- 8. a manifest writes inside its folder unless told otherwise ----------------------------------


@pytest.mark.parametrize("output", ["../escaped.png", "{abs}/elsewhere/x.png", "link/x.png"])
def test_8_manifest_outputs_are_confined_to_its_folder(photos, tmp_path_factory, output):
    outside = tmp_path_factory.mktemp("outside")
    folder = photos / "jobs"
    folder.mkdir()
    (folder / "link").symlink_to(outside, target_is_directory=True)
    for name in ("c0.png", "s.png"):
        (folder / name).write_bytes((photos / name).read_bytes())
    manifest = _jsonl(folder / "jobs.jsonl", [{"defaults": FAST_JOB}, {
        "content": "c0.png", "style": "s.png", "output": output.format(abs=outside)}])
    before = (_snapshot(photos), _snapshot(outside))
    result = runner.invoke(app, ["batch", str(manifest)])
    assert result.exit_code == 2, result.output
    assert "line 2" in result.output and "outside" in result.output and "--allow-outside" in result.output
    assert (_snapshot(photos), _snapshot(outside)) == before

    allowed = runner.invoke(app, ["batch", str(manifest), "--allow-outside"])
    assert allowed.exit_code == 0, allowed.output


def test_8_output_root_moves_and_confines_the_outputs(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    manifest = _jsonl(photos / "jobs.jsonl", [{"defaults": FAST_JOB},
                                             {"content": "c0.png", "style": "s.png", "output": "out/c0.png"}])
    result = runner.invoke(app, ["batch", str(manifest), "--output-root", str(root)])
    assert result.exit_code == 0, result.output
    assert load_image(root / "out" / "c0.png").shape == (3, 24, 32)
    assert not (photos / "out").exists()


# --- one line for every bad input ------------------------------------------------------------------


def _files(folder: Path) -> None:
    (folder / "latin1.toml").write_bytes(b"size = 32\n# caf\xe9\n")
    (folder / "style5.toml").write_text("style = 5\n")
    (folder / "latin1.jsonl").write_bytes(b'{"content": "c0.png", "style": "s.png", "output": "caf\xe9.png"}\n')
    (folder / "style5.jsonl").write_text('{"content": "c0.png", "style": 5, "output": "o.png"}\n')
    (folder / "defaults.jsonl").write_text('{"defaults": [1, 2]}\n{"content": "c0.png", "style": "s.png", '
                                           '"output": "o.png"}\n')
    (folder / "output5.jsonl").write_text('{"content": "c0.png", "style": "s.png", "output": 5}\n')
    (folder / "jobtable.toml").write_text('[job]\ncontent = "c0.png"\nstyle = "s.png"\noutput = "o.png"\n')
    (folder / "defaults.toml").write_text('defaults = 3\n[[job]]\ncontent = "c0.png"\nstyle = "s.png"\n'
                                          'output = "o.png"\n')
    (folder / "bigint.toml").write_text("seed = " + "9" * 5000 + "\n")
    (folder / "bigint.jsonl").write_text('{"content": "c0.png", "style": "s.png", "output": "o.png", "seed": '
                                         + "9" * 5000 + "}\n")
    (folder / "tables.toml").write_text('[jobs]\ncontent = "c0.png"\n')
    (folder / "tilde.jsonl").write_text('{"content": "~nobody-here/c.png", "style": "s.png", "output": "o.png"}\n')
    (folder / "cache").mkdir()
    (folder / "cache" / "fastest-backend.json").write_text('{"cpu:2": {"fastest": ["x"]}, "oops')


RENDER = ["render", "{d}/c0.png", "-s", "{d}/s.png", "-o", "{d}/o.png", *FAST]
GLOB = ["batch", "--glob", "{d}/c*.png", "-s", "{d}/s.png", "-o", "{d}/out/{{stem}}.png",
        "--model", "vgg19-random", "--size", "32", "-n", "1", "--device", "cpu"]


@pytest.mark.parametrize(("args", "expected"), [
    ([*RENDER, "--config", "{d}/latin1.toml"], "latin1.toml: not UTF-8"),
    ([*RENDER, "--config", "{d}/style5.toml"], "style: must be a string or a list of paths, got 5"),
    (["batch", "{d}/latin1.jsonl"], "latin1.jsonl: not UTF-8"),
    (["batch", "{d}/style5.jsonl"], "line 1: style: must be a path or a list of paths, got 5"),
    (["batch", "{d}/defaults.jsonl"], "line 1: defaults: must be a table of options"),
    (["batch", "{d}/output5.jsonl"], "line 1: output: must be a path, got 5"),
    (["batch", "{d}/jobtable.toml"], "[[job]]"),
    (["batch", "{d}/defaults.toml"], "[defaults] must be a table"),
    ([*RENDER, "--seed", "99999999999999999999999"], "--seed: must be an integer below 2**63"),
    ([*RENDER, "--max-memory", "1.2.3G"], "--max-memory: '1.2.3G' is not a size"),
    ([*RENDER, "--style-scale", "inf"], "--style-scale: must be a finite number"),
    ([*RENDER, "--style-weight", "1e39"], "--style-weight"),
    ([*RENDER, "--seed", "abc"], "--seed"),
    ([*RENDER, "--bit-depth", "x"], "--bit-depth"),
    ([*RENDER, "--no-such-option"], "--no-such-option"),
    (["render", "{d}/c0.png", "-s"], "-s"),
    ([*RENDER, "--scale-step", "-1", "--method", "mrf", "--style-scales", "2"], "--scale-step"),
    ([*GLOB[:6], "{d}/out/{{foo}}.png", *GLOB[7:]], "--output: unknown field {foo}"),
    ([*GLOB[:6], "{d}/out/{{0}}.png", *GLOB[7:]], "--output"),
    ([*GLOB[:6], "{d}/out/{{stem.png", *GLOB[7:]], "--output"),
    ([*GLOB, "--devices", "gpu0"], "--devices: GPU indices"),
    ([*GLOB, "--report", "{d}/missing/r.json"], "--report"),
    ([*GLOB, "--report", "{d}/c0.png"], "--report"),
    ([*GLOB, "--workers", "0"], "--workers"),
    (["bench", "-n", "0", "--device", "cpu", "--size", "32"], "--iterations"),
    (["bench", "--device", "cpu", "--size", "32", "-n", "1", "-o", "{d}/missing/b.json"], "-o"),
    (["bench", "--device", "cpu", "--size", "32", "-n", "1", "--model", "vgg20"], "error: --model: unknown value"),
    (["export", "--model", "vgg20"], "error: --model: unknown value"),
    (["export", "--model", "vgg19-random", "--layers", ""], "--layers"),
    (["render", "--help", "--nope"], "--nope"),
    ([*RENDER, "--config", "{d}/bigint.toml"], "bigint.toml: invalid TOML"),
    (["batch", "{d}/bigint.jsonl"], "line 1: invalid JSON"),
    (["batch", "{d}/tables.toml"], "unknown top-level key(s) 'jobs'"),
    (["batch", "{d}/tilde.jsonl"], "~nobody-here/c.png: no such file"),
    ([*RENDER, "--levels", "1000000000", "--dry-run"], "--levels: must be at most 100"),
    ([*RENDER, "--init", "{d}/c1.png", "-o", "{d}/c1.png", "--overwrite"], "is also an input (init)"),
    (["bench", "--device", "cpu", "--size", "32", "-n", "1", "-o", "{d}/c0.png"], "is not a report"),
])
def test_bad_input_is_one_line_and_exit_2_and_changes_nothing(photos, monkeypatch, args, expected):
    _files(photos)
    monkeypatch.setenv("STYLEFORGE_CACHE", str(photos / "cache"))
    before = _snapshot(photos)
    result = runner.invoke(app, [arg.format(d=photos) for arg in args])
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert line.startswith("error: ") and expected in line, line
    assert _snapshot(photos) == before


def test_devices_without_cuda_is_one_line(photos):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = runner.invoke(app, [arg.format(d=photos) for arg in GLOB] + ["--devices", "0"])
    assert result.exit_code == 2 and "this machine has no CUDA device" in _one_line(result)


def test_a_malformed_fastest_backend_file_is_ignored(photos, monkeypatch):
    _files(photos)
    monkeypatch.setenv("STYLEFORGE_CACHE", str(photos / "cache"))
    result = runner.invoke(app, [arg.format(d=photos) for arg in RENDER] + ["--backend", "auto"])
    assert result.exit_code == 0, result.output


def test_typer_parse_errors_are_one_line_through_the_console_script(tmp_path):
    result = subprocess.run([sys.executable, "-m", "styleforge.cli", "render", "x.jpg", "-s", "y.jpg",
                             "-o", str(tmp_path / "o.png"), "--seed", "abc"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "--seed" in result.stderr


def test_status_lines_are_never_wrapped_in_a_log(photos):
    deep = photos / ("a-rather-long-folder-name-" * 4) / ("and-another-one-" * 4)
    deep.mkdir(parents=True)
    output = deep / "out.png"
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"), "-o", str(output),
                                 "--model", "vgg19-random", "--device", "cpu", "--size", "32", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert any(line.startswith(f"wrote {output} ") for line in result.stderr.splitlines()), result.stderr
    manifest = _jsonl(deep / "jobs.jsonl", [{"defaults": FAST_JOB},
                                            {"content": str(photos / "c0.png"), "style": str(photos / "s.png"),
                                             "output": "o.png"}])
    batch = runner.invoke(app, ["batch", str(manifest), "--verbose", "--allow-outside"])
    assert batch.exit_code == 0, batch.output
    assert any(line.endswith(f"report: {deep / 'jobs.report.json'}") for line in batch.stderr.splitlines())
    assert any(line == f"line 2: done {deep / 'o.png'}" for line in batch.stderr.splitlines()), batch.stderr


@pytest.mark.parametrize("command", ["render", "batch", "export", "bench"])
def test_help_shows_every_options_default(command):
    import typer

    group = typer.main.get_command(app)
    cli = group.get_command(typer.Context(group), command)
    options = [param for param in cli.params if param.param_type_name == "option" and param.name != "help"]
    assert len(options) > 5
    for param in options:
        # The help command class moves a declared default into the help text (declared_default).
        declared = getattr(param, "declared_default", param.show_default)
        shown = declared if isinstance(declared, str) else None
        assert shown or (param.show_default is True and not param.is_flag), f"{command} {param.opts}: no default"
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "[default:" in result.output


def test_a_bug_in_the_batch_machinery_still_writes_the_report(photos, monkeypatch):
    def broken(jobs, *, on_outcome, **kwargs):
        on_outcome(engine.JobOutcome(jobs[0].line, str(jobs[0].output), "done"))
        raise RuntimeError("the scheduler fell over")

    monkeypatch.setattr(engine, "run_batch", broken)
    manifest = _jsonl(photos / "jobs.jsonl", [{"defaults": FAST_JOB}] + [
        {"content": f"c{i}.png", "style": "s.png", "output": f"out/c{i}.png"} for i in range(2)])
    result = runner.invoke(app, ["batch", str(manifest)])
    assert result.exit_code == 1
    assert "error: RuntimeError: the scheduler fell over" in result.stderr and "Traceback" not in result.output
    report = json.loads((photos / "jobs.report.json").read_text())
    assert [job["status"] for job in report["jobs"]] == ["done", "not run"]
    assert report["stopped"] is True and "scheduler" in report["error"]


def test_no_intermediates_means_no_intermediate_names_checked(photos):
    """Without --save-every, out_0.png is nobody's business (it was checked, and refused)."""
    (photos / "out_0.png").write_bytes(b"the user's file")
    result = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"),
                                 "-o", str(photos / "out.png"), *FAST])
    assert result.exit_code == 0, result.output
    empty = runner.invoke(app, ["render", str(photos / "c0.png"), "-s", str(photos / "s.png"), "-o", "", *FAST])
    assert empty.exit_code == 2 and "unsupported output format" in _one_line(empty)
