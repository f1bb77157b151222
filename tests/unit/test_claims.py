"""Per-eval claims between real processes: who holds which command of a set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from oaievalset.commands import command_id
from oaievalset.state.claims import Claims

HELD = ["oaieval", "dummy", "a.dev.v0"]
FREE = ["oaieval", "dummy", "b.dev.v0"]

# Another process: what it sees of the claims, and whether it can take each.
OTHER = """
import json, sys
from oaievalset.state.claims import Claims
claims = Claims(__import__("pathlib").Path(sys.argv[1]))
commands = json.loads(sys.argv[2])
elsewhere = sorted(claims.held_elsewhere(commands))
print(json.dumps({"elsewhere": elsewhere, "took": [claims.try_claim(c) for c in commands]}))
"""


def other_process(folder: Path) -> dict[str, list[object]]:
    done = subprocess.run(
        [sys.executable, "-c", OTHER, str(folder), json.dumps([HELD, FREE])],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, list[object]] = json.loads(done.stdout)
    return result


def test_asking_who_else_holds_claims_keeps_this_processs_own(tmp_path: Path) -> None:
    folder = tmp_path / "claims"
    folder.mkdir()
    mine = Claims(folder)
    assert mine.try_claim(HELD)
    (folder / f"{command_id(FREE)}.lock").touch()  # a claim file that nobody holds
    assert mine.held_elsewhere([HELD, FREE]) == set()
    assert mine.held_elsewhere([HELD, FREE]) == set()  # asking twice changes nothing
    # The claim is still ours: another process sees it held and cannot take it.
    assert other_process(folder) == {"elsewhere": [command_id(HELD)], "took": [False, True]}
    mine.release(HELD)
    assert other_process(folder) == {"elsewhere": [], "took": [True, True]}
