"""``python gpu_image_python.py SCRIPT ARGS``: run SCRIPT as the lent GPU machine's image would, where only
its own packages (``bench/gpu_image.txt``) and what ``bench/gpu.sh`` carries (its ``PACKAGES``) exist.

Any other installed distribution is hidden from every import and ``importlib.util.find_spec``, so a module
``bench/gpu.py`` needs but the recipe does not carry fails here, in CI, and not on a lent machine's few
minutes (as zarr's ``google_crc32c`` and the store's ``imagecodecs`` and ``pydantic`` once would have).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import re
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed() -> set[str]:
    """The distributions a script may import from: the image's, the recipe's and this project."""
    image = [line.strip() for line in (BENCH / "gpu_image.txt").read_text().splitlines()]
    packages = re.search(r"PACKAGES=\((.*?)\)", (BENCH / "gpu.sh").read_text(), re.S)
    assert packages, "bench/gpu.sh has no PACKAGES=(...)"
    carried = [re.split(r"[<>=!~]", p)[0] for p in re.findall(r'"([^"]+)"', packages.group(1))]
    return {canonical(n) for n in [*image, *carried] if n and not n.startswith("#")} | {"instrec-pipeline"}


class Hidden(importlib.abc.MetaPathFinder):
    """Finds what the finders behind it find, except the top-level modules in ``hidden``."""

    def __init__(self, finders: list, hidden: set[str]) -> None:
        self.finders, self.hidden = finders, hidden

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in self.hidden:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                return spec
        return None


if __name__ == "__main__":
    ok = allowed()
    hidden = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not any(canonical(d) in ok for d in dists)
    }
    sys.meta_path[:] = [Hidden(list(sys.meta_path), hidden)]
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
