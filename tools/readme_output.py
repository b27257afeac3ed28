"""Write the README's output blocks from real runs, so they cannot go stale.

``python tools/readme_output.py test LOG``: the ``make test`` block from a real pytest log
(``make readme-output`` runs the suite and writes it): the collected count, a few of the
per-file progress lines, and the summary line, exactly as pytest printed them.

``python tools/readme_output.py train``: the ``make train`` block from two real runs of the
README's command in a fresh directory (its own store and download cache), the second one served
from the cache; the progress lines in between are shortened to the first and the last.

Each block sits between ``<!-- output: NAME … -->`` and ``<!-- /output: NAME -->`` in README.md;
``tests/test_readme.py`` checks that the ``make test`` block's counts are the suite's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
TRAINKIT = str(Path(sys.executable).parent / "trainkit")
MAKE_TRAIN = ["train", "--symbols", "AAPL", "--train-start", "2020-01-01", "--train-end", "2022-12-31"]
#: the per-file progress lines the make-test block keeps (the others become "…")
SHOWN = ("tests/reliability/test_bad_input.py", "tests/team/test_team_cache.py", "tests/test_ray.py",
         "tests/test_readme.py", "tests/test_walkforward.py")


def replace_block(name: str, body: str) -> None:
    """Put ``body`` (a console block) between the block's markers in README.md."""
    text = README.read_text()
    pattern = re.compile(rf"(<!-- output: {name}\b[^\n]*-->\n)```console\n.*?```\n(<!-- /output: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- output: {name} --> block")
    README.write_text(pattern.sub(lambda m: f"{m.group(1)}```console\n{body}```\n{m.group(2)}", text, count=1))


def test_block(log: str) -> str:
    """The make-test block from a pytest log (default verbosity: one progress line per file)."""
    lines = log.splitlines()
    collected = next(ln for ln in lines if re.match(r"collected \d+ items", ln))
    summary = next(ln for ln in reversed(lines) if re.search(r"\d+ passed", ln) and ln.startswith("="))
    out = ["$ make test", ".venv/bin/python -m pytest", "…", collected, ""]
    last_kept = True
    for ln in lines:
        if re.match(r"tests/\S+\.py ", ln):
            keep = ln.split()[0] in SHOWN
            if keep:
                out.append(ln)
            elif last_kept:
                out.append("…")
            last_kept = keep
    out += ["", summary]
    return "\n".join(out) + "\n"


def train_block() -> str:
    """Two real runs of make train's command in a fresh directory, the second one cached."""
    root = tempfile.mkdtemp(prefix="tk-readme-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRAINKIT_"))}
    env["TRAINKIT_CACHE_DIR"] = os.path.join(root, "cache")
    out: list[str] = []
    for i in range(2):
        proc = subprocess.run([TRAINKIT, *MAKE_TRAIN], cwd=root, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode:
            raise SystemExit(f"make train's command failed:\n{proc.stderr}")
        out.append("$ make train" + ("        # the second time: served from the cache" if i else ""))
        if not i:
            out.append(".venv/bin/trainkit " + " ".join(MAKE_TRAIN))
        err = [ln for ln in proc.stderr.replace("\r", "\n").splitlines() if ln.strip()]
        progress = [ln for ln in err if ln.startswith("training ")]
        other = [ln for ln in err if not ln.startswith("training ")]
        out += [_shorten(ln) for ln in other]
        if progress:
            out += [progress[0], "…", progress[-1]] if len(progress) > 2 else progress
        out += proc.stdout.splitlines()
    return "\n".join(out) + "\n"


def _shorten(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main(argv: list[str]) -> int:
    if argv[:1] == ["test"] and len(argv) == 2:
        replace_block("make-test", test_block(Path(argv[1]).read_text()))
    elif argv == ["train"]:
        replace_block("make-train", train_block())
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
