"""Regenerate the measured blocks of docs/benchmarks.md from the scripts that produce them.

Each block in the page sits between two markers naming the script and its arguments:

    <!-- bench: bench_overhead.py --runs 3000 -->
    ...the script's own output, pasted here by this script...
    <!-- /bench -->

    python scripts/bench_docs.py                 # run every block's command, rewrite the page
    python scripts/bench_docs.py --only bench_mqtt.py
    python scripts/bench_docs.py --list          # the commands, nothing run

Run it on an otherwise idle machine: every script compares against a baseline measured in the
same run, but a busy neighbour still widens the tails. The tests run each script at a tiny size
and check that the tables it prints have the columns the page shows (``table_headers``).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(<!-- bench: (?P<cmd>[^>]+?) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.S)


def blocks(text: str) -> list[tuple[str, list[str], str]]:
    """(script, arguments, body) of every measured block in the page, in order."""
    out = []
    for m in BLOCK.finditer(text):
        script, *args = shlex.split(m["cmd"])
        out.append((script, args, m["body"]))
    return out


def table_headers(text: str) -> list[str]:
    """The header rows of the Markdown tables in ``text`` (a row followed by a ``| ---`` row)."""
    lines = text.splitlines()
    return [lines[i].strip() for i in range(len(lines) - 1)
            if lines[i].lstrip().startswith("|") and lines[i + 1].lstrip().startswith("| ---")]


def run(script: str, args: list[str]) -> str:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT,
                       capture_output=True, text=True)
    verdict = script == "bench_check.py" and r.returncode == 1  # its own FAIL verdict is a result
    if r.returncode != 0 and not verdict:
        sys.exit(f"{script} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    stamp = time.strftime("%Y-%m-%d")
    return (f"Measured {stamp}, {time.monotonic() - t0:.0f} s, with "
            f"`python scripts/{script} {' '.join(args)}`:\n\n{r.stdout.strip()}\n\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="regenerate only the blocks of this script")
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    args = ap.parse_args()
    text = PAGE.read_text()
    if args.list:
        for script, cmd_args, _ in blocks(text):
            print(f"python scripts/{script} {' '.join(cmd_args)}")
        return

    def replace(m: re.Match[str]) -> str:
        script, *cmd_args = shlex.split(m["cmd"])
        if args.only and script not in args.only:
            return m.group(0)
        print(f"==> {script} {' '.join(cmd_args)}", file=sys.stderr, flush=True)
        return m.group(1) + run(script, cmd_args) + m.group(4)

    PAGE.write_text(BLOCK.sub(replace, text))
    print(f"rewrote {PAGE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
