"""Packaging: what ``pip install mxserver`` puts in site-packages, and how the core finds its modules.

The distribution must claim only names of its own at the top level (a bare ``modules`` package
would clash with any other project that made the same choice), and the first-party modules are
reached only through the entry points declared in setup.cfg (DESIGN: the core never imports them).
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent

#: the only top-level names the distribution may install
OWN_TOP_LEVEL = {"mxserver", "mxserver_modules", "twisted"}


def _entry_points() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    groups: dict[str, dict[str, str]] = {}
    for group, lines in parser["options.entry_points"].items():
        groups[group] = {
            name.strip(): value.strip()
            for name, _, value in (line.partition("=") for line in lines.strip().splitlines())
        }
    return groups


class DistributionTests(unittest.TestCase):
    def test_top_level_names_are_our_own(self) -> None:
        # Build the metadata exactly as pip does (setuptools' egg_info from setup.cfg), into a
        # scratch directory so the checkout is left alone.
        with tempfile.TemporaryDirectory() as out:
            subprocess.run(
                [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "egg_info", "--egg-base", out],
                cwd=ROOT, check=True, capture_output=True,
            )
            info = Path(out, "mxserver.egg-info")
            top_level = set((info / "top_level.txt").read_text().split())
            sources = (info / "SOURCES.txt").read_text().splitlines()
        self.assertNotIn("modules", top_level)
        self.assertEqual(top_level, OWN_TOP_LEVEL)
        # the first-party modules ship, under their own name
        self.assertIn("mxserver_modules/storage_sqlite.py", sources)
        self.assertFalse([s for s in sources if s.startswith("modules/")])

    def test_entry_points_name_importable_objects_of_ours(self) -> None:
        groups = _entry_points()
        first_party = [
            value for group, eps in groups.items() if group.startswith("mxserver.") for value in eps.values()
        ]
        self.assertTrue(first_party)
        for value in first_party:
            module_name, _, attr = value.partition(":")
            self.assertEqual(module_name.split(".")[0], "mxserver_modules", value)
            self.assertTrue(hasattr(importlib.import_module(module_name), attr), value)

    def test_import_modules_is_not_ours(self) -> None:
        # Whatever `import modules` finds (normally nothing), it is not a package of this checkout.
        spec = importlib.util.find_spec("modules")
        if spec is not None and spec.origin is not None:
            self.assertFalse(Path(spec.origin).resolve().is_relative_to(ROOT), spec.origin)


class CoreIndependenceTests(unittest.TestCase):
    def test_core_never_imports_the_modules_package(self) -> None:
        offenders = []
        for path in (ROOT / "mxserver").rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                if any(n.split(".")[0] in ("mxserver_modules", "modules") for n in names):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
        self.assertEqual(offenders, [])
