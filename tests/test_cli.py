"""The command line as a user meets it: help texts, defaults, argument order, start-up cost, argument
checks before any work, one device rule, and progress that reads well in a log file."""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from a3d.cli import build_parser, main, parse
from a3d.progress import Progress, progress_callback

COMMANDS = ("cost", "data", "train", "eval", "eval3d", "report", "grid", "demo", "predict", "export", "serve")


def _subparsers(parser: argparse.ArgumentParser, prefix=()):
    """(command words, parser) for every subcommand and sub-subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def _help(words, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _flat(words, capsys) -> str:
    return " ".join(_help(words, capsys).split())


def _option_blocks(text: str) -> dict[str, str]:
    """Option string -> its help text (the lines from the option to the next one)."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (-[-\w]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def test_every_help_is_plain_text_whole_and_shows_every_default(capsys):
    """Every command's --help: no reST markup, the module docstring's full text (not its first line),
    and a default stated for every option that has one.

    Fails if descriptions are cut to their first line (``a3d grid`` ended mid-sentence), if backticks
    reach the terminal, or if the formatter stops appending defaults (``eval --fps``, ``--bootstrap``,
    ``demo --seed`` had none)."""
    import importlib

    parser = build_parser()
    seen = set()
    for words, sub in _subparsers(parser):
        text = _help(words, capsys)
        assert "`" not in text, (words, text)
        seen.add(words[0])
        if len(words) == 1 and words[0] != "predict":  # the module docstring, to its end (predict has its own text)
            doc = importlib.import_module(f"a3d.cli.{words[0]}").__doc__
            last_words = re.sub(r"[`:]", "", doc.strip().split()[-1])
            assert last_words in text.replace("\n", " "), (words, last_words)
        blocks = _option_blocks(text)
        for action in sub._actions:
            d = action.default
            if not action.option_strings or d is None or isinstance(d, bool) or d == argparse.SUPPRESS or d == []:
                continue
            block = blocks[action.option_strings[-1]]
            assert "default" in block, (words, block)
    assert seen == set(COMMANDS)
    assert "--fps FPS FPs per image to report, comma separated (default: 0.5,1,2,4,8,16)" in _flat(["eval"], capsys)
    assert "--seed SEED synthetic data seed (default 0)" in _flat(["demo"], capsys)
    assert "train and evaluate every operator at 3 and 7 slices, then write the Table 2-style report." in _flat(
        ["grid"], capsys)


def test_descriptions_are_reflowed_by_paragraph():
    """Prose lines of a docstring are joined and wrapped to the terminal's width; example lines
    (indented) and list items keep their own lines.

    Fails if each docstring line is wrapped on its own (the help read as ragged 100/20-column lines)
    or if examples are joined into the prose."""
    from a3d.cli.help import A3DParser

    doc = ("First line of a long description that goes on\nand ends here.\n\n"
           "Usage:\n\n    a3d x --a 1\n    a3d x --b 2\n\n- item one\n  continues\n- item two\n")
    text = A3DParser(prog="x", description=doc).format_help()
    assert "First line of a long description that goes on and ends here." in text.splitlines()
    assert "    a3d x --a 1" in text.splitlines() and "    a3d x --b 2" in text.splitlines()
    assert "- item one continues" in text.splitlines() and "- item two" in text.splitlines()


def test_overrides_may_follow_options():
    """``a3d train CFG k=v --out R k2=v2`` keeps both overrides in order; other stray words are still
    refused.

    Fails with plain ``parse_args`` (argparse fills the overrides from one run of words only: the
    second one was "unrecognized arguments")."""
    p = build_parser()
    args = parse(p, ["train", "tiny", "train.epochs=2", "--out", "R", "train.seed=3", "--no-progress", "data.size=64"])
    assert args.config == "tiny" and args.out == "R" and args.no_progress
    assert args.overrides == ["train.epochs=2", "train.seed=3", "data.size=64"]
    args = parse(p, ["grid", "--out", "G", "data.root=x", "--preset", "tiny", "train.max_iters=1"])
    assert args.overrides == ["data.root=x", "train.max_iters=1"]
    with pytest.raises(SystemExit) as e:
        parse(p, ["train", "tiny", "--out", "R", "stray"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        parse(p, ["report", "run1", "--out", "R", "k=v"])  # report takes no overrides


def test_help_and_version_do_not_import_torch():
    """Building the parser (``a3d --help``, ``--version``, every ``COMMAND --help``) imports no torch,
    so the CLI answers at once.

    Fails if any cli module imports torch (or a module that does) at module level."""
    code = (
        "import sys, contextlib, io\n"
        "from a3d.cli import main\n"
        f"for argv in (['--version'], ['--help'], *[[c, '--help'] for c in {COMMANDS!r}]):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("argv, expected", [
    (["demo", "--minutes", "-1"], "--minutes -1: expected at least 1"),
    (["demo", "--minutes", "nan"], "--minutes nan"),
    (["demo", "--patients", "2"], "--patients 2: expected at least 3"),
    (["demo", "--seed", "-4"], "--seed -4"),
    (["demo", "model.operator=nope"], "model.operator"),
    (["eval", "--predictions", "missing.json", "--data", "{data}", "--out", "{out}", "--fps", "1,x"], "--fps"),
    (["eval", "CKPT_MISSING.pt", "--data", "{data}", "--out", "{out}", "--batch-size", "0"], "--batch-size"),
    (["eval", "CKPT_MISSING.pt", "--data", "{data}", "--out", "{out}"], "checkpoint not found"),
    (["data", "synth", "{out}", "--seed", "-1"], "--seed must be >= 0"),
    (["export", "CKPT_MISSING.pt", "--out", "{out}"], "checkpoint not found"),
    (["serve", "--work-dir", "{out}"], "--checkpoint CKPT is required"),
    (["serve", "--work-dir", "{out}", "--checkpoint", "CKPT_MISSING.pt"], "checkpoint not found"),
    (["serve", "--work-dir", "{out}", "--checkpoint", "CKPT_MISSING.pt", "--tls-cert", "c.pem"], "--tls-key go together"),
    (["serve", "status", "--work-dir", "{out}"], "no a3d serve queue here"),
])
def test_arguments_are_checked_before_any_work(tmp_path, capsys, argv, expected):
    """A bad argument ends in one line and exit 2 within a second or two, and nothing is written
    (``a3d demo --minutes -1`` used to generate 50 MB of data and run an evaluation first).

    Fails if run_demo checks its arguments after generating the data (the --out folder then exists)."""
    out = tmp_path / "out"
    argv = [a.replace("{data}", str(tmp_path)).replace("{out}", str(out)) for a in argv]
    if argv[0] == "demo":
        argv += ["--out", str(out)]
    t = time.monotonic()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not out.exists() and time.monotonic() - t < 20


def test_grid_refuses_an_unknown_split_before_training(tmp_path, capsys):
    from a3d.engine.grid import run_grid
    from a3d.errors import A3DError

    with pytest.raises(A3DError, match="--split 'tset'"):
        run_grid(["a3d_x3"], tmp_path / "g", "tiny", [], "tset", progress=False, log=lambda s: None)
    assert not (tmp_path / "g").exists()
    with pytest.raises(SystemExit):
        main(["grid", "--split", "tset", "--out", str(tmp_path / "g")])


def test_one_device_rule(monkeypatch, tmp_path, capsys):
    """--device defaults to auto everywhere: cuda when available, else cpu (predict resolves it when
    parsing; eval when it loads a model); a device this machine lacks is one line and exit 2.

    Fails if predict keeps its old default (cpu) or resolves auto to cuda without CUDA."""
    import torch

    p = build_parser()
    for words, sub in _subparsers(p):
        for action in sub._actions:
            if "--device" in action.option_strings:
                assert action.default == "auto", words
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert parse(p, ["predict", "x.nii.gz"]).device == "cpu"
    assert parse(p, ["predict", "x.nii.gz", "--device", "cuda:1"]).device == "cuda:1"
    (tmp_path / "DL_info.csv").write_text("x\n")
    assert main(["eval", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert parse(p, ["predict", "x.nii.gz"]).device == "cuda"


def test_progress_is_lines_in_a_log_and_a_bar_on_a_terminal():
    """Not a terminal: one line per 10 % (with count, percentage and postfix), no carriage returns.
    A terminal: tqdm's bar.

    Fails if Progress draws a tqdm bar into a file (the wall of carriage returns in training logs)."""
    log = io.StringIO()
    bar = Progress(50, "train tiny", "it", stream=log)
    for i in range(50):
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 10
    assert lines[0].startswith("train tiny: 5/50 it (10 %)") and lines[-1].startswith("train tiny: 50/50 it (100 %)")
    assert lines[-1].endswith("loss=0.020")

    log = io.StringIO()
    report = progress_callback("key slices", "slice", stream=log)
    for scan in range(2):  # two scans of a batch: the count starts again
        for done in range(1, 21):
            report(done, 20)
    assert log.getvalue().count("key slices: 20/20 slice (100 %)") == 2 and len(log.getvalue().splitlines()) == 20

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    with Progress(5, "train tiny", stream=tty) as bar:
        bar.update(5)
    assert "\r" in tty.getvalue() and "5/5" in tty.getvalue()


def test_training_progress_in_a_log_file_is_lines(synth_root, tmp_path, capsys):
    """``a3d train`` with stderr redirected (here: captured, not a terminal) logs lines, not a bar.

    Fails if RunOutputs draws with tqdm directly."""
    from fixtures_train import small_overrides

    assert main(["train", "tiny", *small_overrides(synth_root), "--out", str(tmp_path / "run"),
                 "train.max_iters=2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "train tiny: 2/2 it (100 %)" in err, err
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["iteration"] == 2
    assert Path(tmp_path / "run" / "best.pt").is_file()
