"""contrib/sytest_check.py: what CI requires of a SyTest run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial import unittest

SCRIPT = Path(__file__).resolve().parent.parent / "contrib" / "sytest_check.py"

TAP = """ok 1 A passes
not ok 2 B fails
ok 3 C passes
ok 4 D passes
"""


class SytestCheckTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.dir, True)
        (self.dir / "out").mkdir()
        (self.dir / "out" / "results.tap").write_text(TAP)

    def check(self, passing: str, racy: str, *extra: str) -> tuple[int, str]:
        (self.dir / "passing.txt").write_text(passing)
        (self.dir / "racy.txt").write_text(racy)
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(self.dir / "out"), str(self.dir / "passing.txt"),
             "--racy", str(self.dir / "racy.txt"), *extra],
            capture_output=True, text=True, check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr

    def test_a_listed_failure_fails_the_check(self) -> None:
        rc, out = self.check("A passes\nB fails\n", "")
        self.assertEqual(rc, 1)
        self.assertIn("REGRESSION (failed): B fails", out)

    def test_a_racy_failure_is_reported_not_required(self) -> None:
        rc, out = self.check("# comment\nA passes\n", "# why\nB fails\n")
        self.assertEqual(rc, 0, out)
        self.assertIn("racy, not required (failed): B fails", out)

    def test_update_adds_new_passes_but_not_racy_ones(self) -> None:
        rc, out = self.check("A passes\n", "D passes\n", "--update")
        self.assertEqual(rc, 0, out)
        names = (self.dir / "passing.txt").read_text().split("\n")
        self.assertIn("C passes", names)
        self.assertNotIn("D passes", names)

    def test_a_test_on_both_lists_is_refused(self) -> None:
        rc, out = self.check("A passes\n", "A passes\n")
        self.assertEqual(rc, 1)
        self.assertIn("on both the pass list and the racy list", out)
