"""The README's commands, run as written: every line of every ``bash`` block, on the tests' tiny dataset
in place of the demo (a fresh Dagster home, a copy of the session's store, a free port for servers).

A command the test does not know fails it: a new README command needs a way to be run here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from instrec_pipeline.store.layout import Layout
from instrec_pipeline_tests.procs import REPO, free_port, start, stop, wait_for

README = REPO / "README.md"


def readme_commands(text: str) -> list[str]:
    """Each command of the ``bash`` blocks (indented ones too), its comment dropped, continuations joined."""
    commands, block, indent = [], None, ""
    for line in text.splitlines():
        fence = re.match(r"^(\s*)```(\w*)\s*$", line)
        if fence and block is None:
            block, indent = ([] if fence.group(2) == "bash" else "other"), fence.group(1)
        elif fence and block is not None:
            if isinstance(block, list):
                commands += [" ".join(c.split()) for c in "\n".join(block).replace("\\\n", " ").splitlines()]
            block = None
        elif isinstance(block, list):
            code = re.split(r"\s+#\s", line.removeprefix(indent), maxsplit=1)[0]
            if code.strip() and not code.lstrip().startswith("#"):
                block.append(code.rstrip())
    return [c for c in commands if c]


def test_the_readme_blocks_are_parsed() -> None:
    commands = readme_commands(README.read_text())
    assert "make demo" in commands and "make test" in commands
    assert any(c.startswith("DAGSTER_HOME=$PWD/.dagster_home .venv/bin/dg launch --assets") for c in commands)
    assert all("#" not in c and "\\" not in c for c in commands)


class Bench:
    """Where the commands run: the repository root, a fresh Dagster home, a copy of the tiny store."""

    def __init__(self, tmp_path: Path, store: Path, clip: Path) -> None:
        self.home = tmp_path / "dagster_home"
        self.home.mkdir()
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.store = tmp_path / "store"
        shutil.copytree(store, self.store)
        self.clip = clip
        self.env = {**os.environ, "INSTREC_HOME": str(self.store)}

    def adapt(self, command: str) -> str:
        """The tiny dataset in place of the demo, this test's Dagster home, this test's clip."""
        command = command.replace("$PWD/.dagster_home", str(self.home))
        command = re.sub(r"\bdemo\|", "tiny|", command).replace("--dataset demo", "--dataset tiny")
        return command.replace("my_clip.mp4", str(self.clip))

    def run(self, command: str, timeout: float = 600) -> str:
        done = subprocess.run(["bash", "-c", self.adapt(command)], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout + done.stderr

    def serve(self, command: str) -> str:
        """A server command: started, answering on its port, stopped."""
        port = free_port()
        adapted = self.adapt(command).replace("-p 3000", f"-p {port}")
        log = self.home / "server.log"
        proc = start(["bash", "-c", adapted], log, self.env)  # its process group is stopped

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as answer:
                    return b"dagster" in answer.read()
            except OSError:
                return False

        try:
            wait_for(answers, proc, log, command, timeout=180)
        finally:
            stop(proc)
        return log.read_text()


def _make_dry_run(target: str, expected: str) -> Callable[[Bench, str], None]:
    """`make demo` (25 min) and `make test` (this suite) cannot run inside a test: their recipes are checked
    here, what they run is tested elsewhere (CI runs `make test`; the demo's graph is the e2e tests')."""

    def check(bench: Bench, _: str) -> None:
        recipe = bench.run(f"make -n {target}")
        assert expected in recipe, recipe

    return check


def _expect(*texts: str) -> Callable[[Bench, str], None]:
    def check(bench: Bench, command: str) -> None:
        out = bench.run(command)
        for text in texts:
            assert text in out, f"{command}: {text!r} not in\n{out[-3000:]}"

    return check


def _launched(bench: Bench, command: str) -> None:
    bench.run(command)
    instance = DagsterInstance.from_config(str(bench.home))
    runs = instance.get_runs()
    assert runs and runs[0].tags.get("dagster/partition") == "tiny|train"
    assert instance.get_run_stats(runs[0].run_id).steps_succeeded >= 5


def _serves(bench: Bench, command: str) -> None:
    log = bench.serve(command)
    assert "Error loading" not in log and "Traceback" not in log, log[-3000:]


def _backfill(bench: Bench, command: str) -> None:
    bench.run(command)
    instance = DagsterInstance.from_config(str(bench.home))
    backfills = instance.get_backfills()
    assert len(backfills) == 1 and set(backfills[0].partition_names or []) == {"tiny|train", "tiny|val",
                                                                              "tiny|test"}  # fmt: skip


#: How each README command is run here: a pattern of the command → a check that runs it.
HOW: list[tuple[str, Callable[[Bench, str], None]]] = [
    (r"^make demo$", _make_dry_run("demo", "instrec_pipeline.cli demo")),
    (r"^make test$", _make_dry_run("test", "pytest")),
    (r"^\.venv/bin/dg check defs$", _expect("All definitions loaded successfully")),
    (r"^\.venv/bin/dg list defs$", _expect("extraction_automation", "manifest_file", "frame_embeddings")),
    (r"^\.venv/bin/dagster definitions validate$", _expect("Validation successful")),
    (r"^DAGSTER_HOME=\S+ \.venv/bin/dg launch ", _launched),
    (r"^DAGSTER_HOME=\S+ \.venv/bin/dg dev ", _serves),
    (r"^DAGSTER_HOME=\S+ \.venv/bin/dagster job backfill ", _backfill),
    (r"^\.venv/bin/instrec datasets$", _expect("tiny: 3 classes")),
    (r"^\.venv/bin/instrec predict ", _expect("(models of tiny)", "fusion")),
]


def test_every_readme_command_runs_as_written(
    materialised: tuple[Layout, DagsterInstance], tiny_dataset: Path, tmp_path: Path
) -> None:
    layout, _ = materialised
    manifest = pd.read_csv(tiny_dataset)
    clip = tiny_dataset.parent / manifest.loc[manifest["split"] == "test", "source"].iloc[0]
    bench = Bench(tmp_path, layout.root, clip)
    commands = readme_commands(README.read_text())
    unknown = [c for c in commands if not any(re.search(p, c) for p, _ in HOW)]
    assert not unknown, f"README commands this test cannot run yet: {unknown}"
    for command in commands:
        how = next(check for pattern, check in HOW if re.search(pattern, command))
        how(bench, command)


@pytest.mark.parametrize("pattern", [p for p, _ in HOW])
def test_every_way_of_running_matches_a_readme_command(pattern: str) -> None:
    """No stale entries: each pattern still matches a command of the README."""
    assert any(re.search(pattern, c) for c in readme_commands(README.read_text())), pattern
