"""Every code block of README.md runs as written, after the documented substitutions below.

How each fenced block is treated (new blocks are picked up automatically):

- ``python``: run in a fresh interpreter (this one), in an empty temporary folder.
- ``bash`` / ``sh``: every command (continuation lines joined, trailing ``# comments`` dropped, split
  on ``&&``) runs with bash, in README order, in ONE working folder shared by all bash blocks:
  later commands use what earlier ones wrote (train -> eval -> predict), as a reader would.
  ``a3d`` and ``torchrun`` on PATH are shims that run this interpreter (``-m a3d``,
  ``-m torch.distributed.run``), so the commands use the a3d under test.
  Before running, each command is rewritten by SUBSTITUTIONS (placeholders for the user's data and
  scans become small synthetic ones; training shrinks to the tiny test size and one or two
  iterations). A command matching SKIPPED is not run; its reason says why and what covers it.
- ``toml`` / ``json``: parsed. ``text``: not run (output shown to the reader).
- any other language, or none: the test fails (say what the block is).

Stale entries fail too: every substitution and every skip must match some README command, so the
tables stay an honest account of what differs from the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures_train import small_overrides
from test_predict_support import phantom, synthetic_nifti, write_dicom_series

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TIMEOUT_S = 600  # per command; a tiny-size command takes seconds

# Overrides that shrink any packaged config (paper or tiny) to the size the training tests use.
SHRINK = " ".join([o for o in small_overrides("unused") if not o.startswith("data.root")]
                  + ["model.pretrained=none"])


@dataclass(frozen=True)
class Rule:
    pattern: str
    replacement: str
    why: str


# Applied in this order (re.sub, multiline). {placeholders} are filled by the bash test's fixture.
SUBSTITUTIONS = (
    Rule(r"^\.venv/bin/", "", "the README's venv is the interpreter running these tests"),
    Rule(r"/data/DeepLesion", "{deeplesion}", "DeepLesion -> a synthetic one (8 patients, 128 px, same format)"),
    Rule(r"--workers \d+", "--workers 1", "2 shared CPU cores"),
    Rule(r"--device cuda\b", "--device {device}", "cpu when no GPU is present"),
    Rule(r"(?<![\w./-])scans/patient7/", "{dicom}", "a user's DICOM folder -> a small synthetic series"),
    Rule(r"(?<![\w./-])ct\.nii\.gz", "{nifti}", "a user's NIfTI -> a small synthetic volume"),
    Rule(r"--checkpoint best\.pt", "--checkpoint runs/a3d_x7/best.pt", "the checkpoint trained above"),
    Rule(r"--slices \d+:\d+", "--slices 4:6", "two key slices of the small synthetic volume"),
    Rule(r"--nproc_per_node \d+", "--nproc_per_node 1", "one CPU process (DDP itself: test_train_ddp.py)"),
    # Overrides go next to the command's own positionals (after --out works too: a3d.cli.parse).
    Rule(r"^(a3d grid)(.*?)(\s[\w.]+=)", r"\1 --configs a3d_x3\2 {shrink} train.max_iters=1\3",
         "one grid cell, tiny size, one iteration"),
    Rule(r"^(a3d demo\b.*)$", r"\1 --patients 8 --no-progress {shrink} train.max_iters=2",
         "8 synthetic patients, tiny size, two iterations"),
    Rule(r"^(.*\btrain --resume\b.*)$", r"\1 train.max_iters=2", "resume for one more iteration"),
    Rule(r"^(.*\btrain (?!--resume)\S+)", r"\1 {shrink} train.max_iters=1", "tiny size, one iteration"),
)

# Commands not run here: (pattern matched with re.search, reason).
SKIPPED = (
    (r"^python3 -m venv ", "creates the README's venv; .ci/run does this on a fresh clone"),
    (r"^(\.venv/bin/)?pip install ", "installs packages: network, minutes, and it would change the environment "
                                     "running these tests; .ci/run runs the README's test install on a fresh clone, "
                                     "the others were run by hand (README, Supported versions)"),
    (r"-m pytest\b", "the test suite itself (this test is part of it)"),
)

_LANGS_RUN = {"python", "bash", "sh"}
_LANGS_PARSED = {"toml", "json"}
_LANGS_SHOWN = {"text"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str


def fenced_blocks(markdown: str) -> list[Block]:
    """Fenced code blocks (```lang ... ```), also indented ones inside list items, dedented."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^( *)```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, start, body = m.group(1), i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"README.md:{start + 1}: code fence never closed")
        blocks.append(Block(start + 1, m.group(2).lower(), textwrap.dedent("\n".join(body)) + "\n"))
        i += 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """One shell block -> its commands: continuation lines joined, comments dropped, split on &&."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()
        commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def apply_rules(command: str) -> tuple[str, list[Rule]]:
    """The command rewritten by SUBSTITUTIONS (placeholders still in), and the rules that fired."""
    fired = []
    for rule in SUBSTITUTIONS:
        command, n = re.subn(rule.pattern, rule.replacement, command, flags=re.M)
        fired += [rule] * bool(n)
    return command, fired


def substitute(command: str, values: dict[str, str]) -> str:
    command = apply_rules(command)[0]
    for key, value in values.items():  # not str.format: a command may hold shell braces
        command = command.replace("{" + key + "}", value)
    return command


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command)), None)


def readme_blocks() -> list[Block]:
    return fenced_blocks(README.read_text(encoding="utf-8"))


def readme_commands() -> list[tuple[int, str]]:
    return [(b.line, c) for b in readme_blocks() if b.lang in ("bash", "sh") for c in shell_commands(b.code)]


# ------------------------------------------------------------------------------------------------
# the parser and the tables


def test_parser_on_a_known_markdown():
    """Fails if indented fences, continuation lines, comments or && chains are mishandled."""
    md = ("text\n```bash\na3d x --a 1 \\\n   --b 2   # note\n# only a comment\n\nfoo && bar baz\n```\n"
          "- item\n\n  ```python\n  print(1)\n  ```\n")
    blocks = fenced_blocks(md)
    assert [(b.line, b.lang) for b in blocks] == [(2, "bash"), (11, "python")]
    assert blocks[1].code == "print(1)\n"
    assert shell_commands(blocks[0].code) == ["a3d x --a 1 --b 2", "foo", "bar baz"]


def test_every_block_has_a_known_language():
    """Fails on a fenced block this test would silently not run (no language, or an unknown one)."""
    known = _LANGS_RUN | _LANGS_PARSED | _LANGS_SHOWN
    bad = [f"README.md:{b.line}: ```{b.lang}" for b in readme_blocks() if b.lang not in known]
    assert not bad, f"code blocks of unknown language (run: {sorted(_LANGS_RUN)}, parsed: {sorted(_LANGS_PARSED)}, " \
                    f"shown only: {sorted(_LANGS_SHOWN)}): {bad}"


def test_no_stale_substitution_or_skip():
    """Fails if a substitution or skip matches no README command (the README changed, the table did not)."""
    commands = [c for _, c in readme_commands()]
    fired = {id(rule) for c in commands if not skip_reason(c) for rule in apply_rules(c)[1]}
    for rule in SUBSTITUTIONS:
        assert id(rule) in fired, f"unused substitution {rule.pattern!r} ({rule.why})"
    for pattern, _ in SKIPPED:
        assert any(re.search(pattern, c) for c in commands), f"unused skip {pattern!r}"


def test_substitution_table_on_known_commands():
    """Fails if a rule is reordered or rewritten so that a command loses its shrink or gains two."""
    v = {"deeplesion": "/S", "device": "cpu", "dicom": "/D", "nifti": "/N.nii.gz", "shrink": "SHRINK"}
    assert substitute("a3d train a3d_x7 data.root=/data/DeepLesion --out r", v) == \
        "a3d train a3d_x7 SHRINK train.max_iters=1 data.root=/S --out r"
    assert substitute("a3d train --resume --out r", v) == "a3d train --resume --out r train.max_iters=2"
    assert substitute("a3d grid --preset paper data.root=/data/DeepLesion --out g", v) == \
        "a3d grid --configs a3d_x3 --preset paper SHRINK train.max_iters=1 data.root=/S --out g"
    assert substitute(".venv/bin/a3d demo --out d", v) == \
        "a3d demo --out d --patients 8 --no-progress SHRINK train.max_iters=2"
    assert substitute("a3d predict ct.nii.gz --checkpoint best.pt --device cuda", v) == \
        "a3d predict /N.nii.gz --checkpoint runs/a3d_x7/best.pt --device cpu"
    assert skip_reason(".venv/bin/pip install -q -e .") and skip_reason("a3d train x") is None


# ------------------------------------------------------------------------------------------------
# the README's blocks


def _python_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "python"]


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: f"README-line-{b.line}")
def test_python_block_runs(block, tmp_path):
    """Fails if a README python block raises (e.g. ``a3d.models`` not reachable after ``import a3d``)."""
    res = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert res.returncode == 0, f"README.md:{block.line}: python block failed:\n{res.stderr[-3000:]}"


def test_data_blocks_parse():
    """Fails if a README toml or json block is not valid TOML / JSON."""
    for b in readme_blocks():
        if b.lang == "toml":
            tomllib.loads(b.code)
        elif b.lang == "json":
            json.loads(b.code)


@pytest.fixture()
def shell_env(tmp_path, synth_root) -> tuple[Path, dict[str, str], dict[str, str]]:
    """(working folder, environment with the a3d/torchrun shims first on PATH, placeholder values)."""
    import torch

    shims = tmp_path / "bin"
    shims.mkdir()
    for name, module in (("a3d", "a3d"), ("torchrun", "torch.distributed.run")):
        (shims / name).write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        (shims / name).chmod(0o755)
    work = tmp_path / "work"
    shutil.copytree(synth_root, work / "DeepLesion")
    write_dicom_series(work / "scan_dicom", phantom((8, 48, 48)))
    synthetic_nifti(work / "scan.nii.gz", shape_zyx=(8, 48, 48))
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}"}
    values = {"deeplesion": str(work / "DeepLesion"), "dicom": str(work / "scan_dicom"),
              "nifti": str(work / "scan.nii.gz"), "shrink": SHRINK,
              "device": "cuda" if torch.cuda.is_available() else "cpu"}
    return work, env, values


def test_shell_commands_run_in_order(shell_env):
    """Fails if any README shell command (after the substitutions) exits non-zero."""
    work, env, values = shell_env
    ran = 0
    for line, command in readme_commands():
        if skip_reason(command):
            continue
        run = substitute(command, values)
        res = subprocess.run(["bash", "-c", run], cwd=work, env=env, capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        assert res.returncode == 0, (f"README.md:{line}: `{command}` failed (exit {res.returncode}); "
                                     f"ran as `{run}`:\n{res.stderr[-3000:]}")
        ran += 1
    assert ran > 0
