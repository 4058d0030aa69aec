"""The README's commands, run as a user copies them, and what the README says they write.

A fenced block of README.md is checked when a comment like this sits just above it:

    <!-- check
    line 1: expect outputs/<date>/<time>/{checkpoints/last.ckpt, metrics.json}; printed test metrics:
    lines 1, 3-4 (slow): after Quick start; make images.npz; append objective.beta=1,4
    -->

Each ``line N`` / ``lines N, M-K`` entry is one step, one test: the block's lines named (logical lines,
counted from 1, a line continued with a backslash counting once) run in bash, each command in a shell of its
own after the ``export`` / ``cd`` lines named before it, in a working directory that stands for the
repository root (``train.py``, ``eval.py``, ``report.py`` and ``conf`` linked there, MNIST-shaped data in
``./data``, and the home directory there too). Each line is the README's text: a leading
``pip install ... &&`` and a trailing ``# comment`` are dropped, ``<date>``, ``<time>``, ``<job>`` and
``...`` in a path stand for the newest match in the working directory, and small overrides are appended to
each ``python train.py`` (``TRAIN_SHORT``) and ``python eval.py`` (``EVAL_SHORT``) command, then the step's
own ``append``. An entry may continue on indented lines; its clauses, separated by ``;``, are:

- ``expect P, Q, ...``: paths the step must write (made or changed while it runs), with the placeholders
  above, ``NNN`` (digits) and ``…`` (anything), ``~`` the home directory; ``DIR/{a, b}`` names
  several things in one directory, a trailing ``/`` a directory. Each name must be spelled in the README
  outside these comments, so a README that renames an output fails until its check says the same.
- ``printed TEXT``: text the step's console output (stdout and stderr) must hold.
- ``make P``: made data written before the step: ``*.npz`` / ``*.npy`` an image array, ``DIR/`` a folder
  of PNGs.
- ``append OVERRIDES``: more overrides for the step's ``train.py`` / ``eval.py`` commands (a key given again
  takes the last value, so ``objective.beta=1,4`` shrinks a sweep).
- ``after SECTION``: the first step of that section's check runs first, in the same working directory
  (the evaluation of the quick start's checkpoint, the report of its run).

``(slow)`` marks a step for ``pytest -m slow``. A block of the section whose first line is ``# PATH``
(``# my_parts.py``, ``# my_conf/model/prior/laplace.yaml``) is a file the user writes: it is written to
that path before the section's steps run. Steps of different working directories run two at a time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

import numpy as np
import pytest

from conftest import ROOT, make_fake_mnist

README = ROOT / "README.md"

# A few batches, one epoch: what every README training command gets appended.
TRAIN_SHORT = ("trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1 "
               "trainer.limit_test_batches=1")
# A few samples of a hundred test images.
EVAL_SHORT = "num_samples=2 nll_samples=4 data.eval_batch_size=100 trainer.limit_test_batches=1"
# The sections whose commands users copy most: each must keep a check.
CHECKED_SECTIONS = ("Quick start", "Evaluating a checkpoint", "Sweeps and several devices", "A local report",
                    "Data", "Add your own part")

_MARKER = re.compile(r"<!-- check\n(.*?)-->\n+```\w*\n(.*?)```", re.S)
_HEADING = re.compile(r"^#{2,4} (.+)$", re.M)
_FENCE = re.compile(r"```\w*\n(.*?)```", re.S)
_SETUP = re.compile(r"(export|cd|source) |\w+=\S*$")  # lines that set up the shell
_STEP = re.compile(r"lines? ([\d,\s-]+?)\s*(\(slow\))?:\s*(.*)", re.S)
_PLACEHOLDERS = {"<date>": "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]", "<time>": "[0-9][0-9]-[0-9][0-9]-[0-9][0-9]",
                 "<job>": "[0-9]*", "...": "**", "NNN": "[0-9][0-9][0-9]", "…": "*"}


@dataclass
class Step:
    section: str
    block: str                      # the fenced block's text
    lines: list[int]                # logical lines of the block, from 1
    slow: bool
    expect: list[str] = field(default_factory=list)     # as written, braces unexpanded
    printed: list[str] = field(default_factory=list)
    make: list[str] = field(default_factory=list)
    append: str = ""
    after: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # the section's files: path -> text

    @property
    def id(self) -> str:
        numbers = ", ".join(str(n) for n in self.lines)
        return f"{self.section}: line{'s' if len(self.lines) > 1 else ''} {numbers}"


def _line_numbers(text: str) -> list[int]:
    numbers = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        numbers += list(range(int(first), int(last or first) + 1))
    return numbers


def _split_outside_braces(text: str, sep: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "{") - (char == "}")
        if char == sep and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p.strip() for p in [*parts, current] if p.strip()]


def expand(path: str) -> list[str]:
    """``a/{b, c/d}`` -> ``a/b``, ``a/c/d``."""
    match = re.fullmatch(r"(.*?)\{(.*)\}", path)
    if not match:
        return [path]
    return [match.group(1) + item for item in _split_outside_braces(match.group(2), ",")]


def names(path: str) -> list[str]:
    """The names an expect entry spells: ``a/{b, c}`` -> ``a/``, ``b``, ``c``."""
    match = re.fullmatch(r"(.*?)\{(.*)\}", path)
    if not match:
        return [path]
    return [match.group(1), *_split_outside_braces(match.group(2), ",")]


def _section_of(text: str, position: int) -> str:
    headings = [m for m in _HEADING.finditer(text) if m.start() < position]
    return headings[-1].group(1).strip() if headings else ""


def _section_files(text: str, section: str) -> dict[str, str]:
    """The blocks of a section that are files: first line ``# PATH``."""
    files = {}
    for match in _FENCE.finditer(text):
        body = match.group(1)
        first = body.split("\n", 1)[0]
        path = re.fullmatch(r"# ([\w./-]+\.\w+)", first)
        if path and _section_of(text, match.start()) == section:
            files[path.group(1)] = body
    return files


def parse_readme(text: str) -> list[Step]:
    steps = []
    for match in _MARKER.finditer(text):
        section = _section_of(text, match.start())
        entries = re.split(r"\n(?=lines? \d)", match.group(1).strip())
        for entry in entries:
            found = _STEP.fullmatch(" ".join(entry.split()))
            assert found, f"README, check in {section!r}: cannot read {entry!r} (line N: clause; clause)"
            step = Step(section, match.group(2), _line_numbers(found.group(1)), bool(found.group(2)),
                        files=_section_files(text, section))
            for clause in _split_outside_braces(found.group(3), ";"):
                verb, _, rest = clause.partition(" ")
                if verb == "expect":
                    step.expect += _split_outside_braces(rest, ",")
                elif verb == "printed":
                    step.printed.append(rest)
                elif verb == "make":
                    step.make += rest.split()
                elif verb == "append":
                    step.append = rest
                elif verb == "after":
                    step.after = rest
                else:
                    raise AssertionError(f"README, check in {section!r}: unknown clause {clause!r}")
            steps.append(step)
    return steps


def logical_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, blank lines dropped."""
    return [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]


README_TEXT = README.read_text()
STEPS = parse_readme(README_TEXT)
TEXT_OUTSIDE_CHECKS = re.sub(r"<!-- check\n.*?-->", "", README_TEXT, flags=re.S)


def _glob(root: Path, pattern: str) -> list[Path]:
    for placeholder, glob in _PLACEHOLDERS.items():
        pattern = pattern.replace(placeholder, glob)
    if pattern.startswith("~/"):
        pattern = pattern[2:]
    return sorted(root.glob(pattern.rstrip("/")), key=lambda p: p.stat().st_mtime)


def command(line: str, step: Step, root: Path) -> str:
    """The README line as it runs: no pip install, no comment, placeholders resolved, overrides appended."""
    line = re.sub(r"^pip install\b.*?&&\s*", "", line)
    line = re.sub(r"\s+#.*$", "", line)
    words = []
    for word in line.split():
        key, eq, value = word.rpartition("=")
        if any(p in value for p in ("<date>", "<time>", "<job>")) or ("..." in value and value != "..."):
            matches = _glob(root, value)
            assert matches, f"{value!r} in `{line}` matches nothing in the working directory"
            word = f"{key}{eq}{matches[-1].relative_to(root)}"
        words.append(word)
    line = " ".join(words)
    script = re.search(r"(^|\s)python (train|eval)\.py\b", line)
    if script:
        line += " " + (TRAIN_SHORT if script.group(2) == "train" else EVAL_SHORT)
        line += f" {step.append}" if step.append else ""
    return line


def make_data(root: Path, path: str) -> None:
    """Made images where a step names a file or folder of its own: blobs of ink, as fake MNIST."""
    from PIL import Image

    target = root / path.removeprefix("~/")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(120, 28, 28), dtype=np.uint8)
    for i, (r, c) in enumerate(rng.integers(2, 18, size=(len(images), 2))):
        images[i, r: r + 8, c: c + 8] = 255
    if path.endswith("/"):
        target.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images[:60]):
            Image.fromarray(np.stack([image, image[::-1], image.T], -1)).save(target / f"{i:03d}.png")
    elif path.endswith(".npz"):
        np.savez(target, images=images)
    elif path.endswith(".npy"):
        np.save(target, images)
    else:
        raise AssertionError(f"make {path}: a .npz, a .npy or a folder/")


@dataclass
class Result:
    output: str
    returncode: int
    started: float
    root: Path
    script: str


class Runner:
    """Runs each step once, in the working directory of its chain (the section it comes ``after``, or its
    own): the steps of one directory in README order, one at a time, two directories at once."""

    def __init__(self, base: Path, mnist: Path):
        self.base, self.mnist = base, mnist
        self.results: dict[str, Future] = {}
        self.lock = Lock()
        self.root_locks: dict[Path, Lock] = {}
        self.pool = ThreadPoolExecutor(max_workers=2)

    def chain(self, step: Step) -> list[Step]:
        """The steps it needs (the first step of its ``after`` section, and so on), then the step."""
        if step.after is None:
            return [step]
        first = [s for s in STEPS if s.section == step.after]
        assert first, f"{step.id}: after {step.after!r}, which has no check"
        return [*self.chain(first[0]), step]

    def root(self, step: Step) -> Path:
        return self.base / re.sub(r"\W+", "_", self.chain(step)[0].section).strip("_")

    def submit(self, *steps: Step) -> None:
        with self.lock:
            groups: dict[Path, list[Step]] = {}
            for step in steps:
                for needed in self.chain(step):
                    if needed.id not in self.results:
                        self.results[needed.id] = Future()
                        groups.setdefault(self.root(needed), []).append(needed)
            for root, group in groups.items():
                self.root_locks.setdefault(root, Lock())
                self.pool.submit(self._run_group, root, group)

    def result(self, step: Step) -> Result | str:
        self.submit(step)
        return self.results[step.id].result()

    def _run_group(self, root: Path, group: list[Step]) -> None:
        for step in group:
            future = self.results[step.id]
            try:
                needed = [(s.id, self.results[s.id].result()) for s in self.chain(step)[:-1]]
                failed = [name for name, r in needed if not isinstance(r, Result) or r.returncode != 0]
                if failed:
                    future.set_result(f"needs {failed[0]}, which failed")
                    continue
                with self.root_locks[root]:
                    future.set_result(self.run(root, step))
            except BaseException as e:  # noqa: BLE001 - the test that waits reports it
                future.set_result(f"{type(e).__name__}: {e}")

    def workdir(self, root: Path) -> Path:
        if not root.exists():
            (root / "data").mkdir(parents=True)
            (root / "data" / "MNIST").symlink_to(self.mnist / "MNIST")
            for name in ("train.py", "eval.py", "report.py", "conf"):
                (root / name).symlink_to(ROOT / name)
        return root

    def run(self, root: Path, step: Step) -> Result:
        root = self.workdir(root)
        for path, text in step.files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        for path in step.make:
            make_data(root, path)
        lines = logical_lines(step.block)
        assert max(step.lines) <= len(lines), f"the block has {len(lines)} lines"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WANDB_")
               and k not in ("VAE_DATA_DIR", "HYDRA_FULL_ERROR", "PYTHONPATH", "XDG_CACHE_HOME")}
        env.update(HOME=str(root), WANDB_MODE="offline", PYTHONUNBUFFERED="1", PATH=_path_with_python(),
                   MPLCONFIGDIR=os.environ.get("MPLCONFIGDIR") or _matplotlib_dir())
        started, setup, scripts, output, returncode = time.time(), [], [], "", 0
        for n in step.lines:
            if _SETUP.match(lines[n - 1]):  # export PYTHONPATH=$PWD: for the commands after it
                setup.append(lines[n - 1])
                continue
            # Each command in its own shell, its paths resolved once the commands before it have run.
            scripts.append("\n".join(["set -e", *setup, command(lines[n - 1], step, root)]))
            done = subprocess.run(["bash", "-c", scripts[-1]], cwd=root, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            output, returncode = output + done.stdout, done.returncode
            if returncode:
                break
        return Result(output, returncode, started, root, "\n\n".join(scripts))


def _path_with_python() -> str:
    """PATH with this interpreter's directory first: ``python`` in a README line is the one running the tests."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _matplotlib_dir() -> str:
    import matplotlib

    return matplotlib.get_configdir()  # the user's font cache, not a fresh one in the made home


@pytest.fixture(scope="module")
def runner(tmp_path_factory, request):
    mnist = make_fake_mnist(tmp_path_factory.mktemp("readme_data"), num_train=5300, num_test=200)
    runner = Runner(tmp_path_factory.mktemp("readme"), mnist)
    # Start every selected step now, so that two run at once while the tests wait in turn.
    selected = {item.callspec.id for item in request.session.items
                if item.originalname == test_readme_commands_run_and_write_what_the_readme_says.__name__}
    runner.submit(*(step for step in STEPS if step.id in selected))
    yield runner
    runner.pool.shutdown(wait=True, cancel_futures=True)


def result_of(runner: Runner, step: Step) -> Result:
    result = runner.result(step)
    assert isinstance(result, Result), f"{step.id}: {result}"
    assert result.returncode == 0, f"{step.id} failed:\n{result.script}\n{result.output[-4000:]}"
    return result


def test_the_sections_users_copy_from_are_checked():
    assert {s.section for s in STEPS} >= set(CHECKED_SECTIONS), "a README section lost its <!-- check -->"
    for step in STEPS:
        assert not [s for s in STEPS if s.id == step.id and s is not step], f"two checks named {step.id}"


@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_each_output_a_check_expects_is_named_in_the_readme(step):
    for entry in step.expect:
        for name in names(entry):
            assert name in TEXT_OUTSIDE_CHECKS, (
                f"{step.id}: the check expects {name!r}, which the README does not name (any more?): "
                f"make the check above the block say what the README says")


@pytest.mark.parametrize("step", [pytest.param(s, id=s.id, marks=[pytest.mark.slow] if s.slow else [])
                                  for s in STEPS])
def test_readme_commands_run_and_write_what_the_readme_says(step, runner):
    result = result_of(runner, step)
    for entry in step.expect:
        for path in expand(entry):
            written = [p for p in _glob(result.root, path) if p.stat().st_mtime >= result.started - 1]
            assert written, f"{step.id}: the README says it writes {path}; nothing there is new after\n{result.script}"
    for text in step.printed:
        assert text in result.output, (f"{step.id}: the README says it prints {text!r}; it printed:\n"
                                       f"{result.output[-3000:]}")


# What a new user would have to learn to ignore at the start of a run: Lightning's device report, its read-back
# of limit_*_batches=1, its tips for other services, and wandb's banner (our own line says where the run is).
NOISE = ("GPU available", "TPU available", "HPU available", "LOCAL_RANK", "💡", "litlogger", "was configured so",
         "Trainer already configured", "estimate number of stepping batches", "Tracking run with wandb",
         "Run data is saved locally", "wandb leet", "anonymous setting", "environment variables will be ignored")
_LOG_LINE = re.compile(r"^\[[\d\- :,]+\]\[([\w.]+)\]\[(\w+)\] - ")


def test_the_first_screen_of_a_run_has_no_line_to_ignore(runner):
    (step,) = [s for s in STEPS if s.section == "Quick start"]
    result = result_of(runner, step)
    lines = result.output.splitlines()
    first_epoch = next(i for i, line in enumerate(lines) if re.search(r"\b[Ee]poch 1/", line))
    screen = lines[:first_epoch]
    assert any("run directory" in line for line in screen) and any("trainable parameters" in line for line in screen)
    for line in screen:
        assert not any(text in line for text in NOISE), f"first screen:\n" + "\n".join(screen)
        assert not line.startswith("wandb:"), f"first screen:\n" + "\n".join(screen)
        log = _LOG_LINE.match(line)  # a log line before the first epoch is ours, or a warning
        assert not log or log.group(1).startswith("vae_lightning") and log.group(1) != "vae_lightning.wandb" \
            or log.group(2) in ("WARNING", "ERROR"), f"first screen:\n" + "\n".join(screen)
    # Kept in the run's log file, not lost.
    (log_file,) = _glob(result.root, "outputs/<date>/<time>/train.log")
    kept = log_file.read_text()
    assert "GPU available" in kept and "Tracking run with wandb" in kept
