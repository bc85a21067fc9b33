"""Start-up time of the command line, this tree against an earlier commit: `vitkit --help`, commands' `--help`, a
usage error, `vitkit models`, `vitkit doctor --no-checks` and `import vitkit`.

Each tree's src/ is copied to a temporary directory and run as `PYTHONPATH=<copy> python -m vitkit ...` (what the
`vitkit` script runs): one untimed run first (it writes the .pyc files), then the median of --runs wall times, the
two trees taking turns. `python -X importtime -c "import vitkit.cli"` gives the import's own share.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The floor: a bare typer app of one command with 8 options, timed as vitkit is.
FLOOR_APP = """
import typer

app = typer.Typer(add_completion=False, rich_markup_mode=None)


@app.callback(help="A bare app.")
def root() -> None: ...


@app.command(help="One command.")
def hello(a: str = typer.Option("x", help="A."), b: int = typer.Option(1, help="B."),
          c: float = typer.Option(1.0, help="C."), d: bool = typer.Option(False, "--d", help="D."),
          e: str | None = typer.Option(None, help="E."), f: int = typer.Option(2, help="F."),
          g: str = typer.Option("y", help="G."), h: int | None = typer.Option(None, help="H.")) -> None: ...


app(prog_name="floor")
"""
COMMANDS = [
    ("`vitkit --help`", ["-m", "vitkit", "--help"]),
    ("`vitkit train --help` (55 options)", ["-m", "vitkit", "train", "--help"]),
    ("`vitkit export --help`", ["-m", "vitkit", "export", "--help"]),
    ("`vitkit bench attention --help`", ["-m", "vitkit", "bench", "attention", "--help"]),
    ("`vitkit train --no-such-option` (a usage error)", ["-m", "vitkit", "train", "--no-such-option"]),
    ("`vitkit doctor --no-checks`", ["-m", "vitkit", "doctor", "--no-checks"]),
    ("`vitkit models`", ["-m", "vitkit", "models"]),
    ('`python -c "import vitkit"`', ["-c", "import vitkit"]),
    ('`python -c "import torch"`', ["-c", "import torch"]),
    ("`python -c pass`", ["-c", "pass"]),
]


def copy_tree(ref: str | None, into: Path) -> Path:
    """src/ of commit `ref` (None: the working tree) under `into`."""
    if ref is None:
        shutil.copytree(ROOT / "src", into / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    else:
        archive = subprocess.run(["git", "archive", ref, "src"], cwd=ROOT, capture_output=True, check=True).stdout
        into.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def environment(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(src)}


def wall(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd=tempfile.gettempdir(), check=False)
    return time.perf_counter() - start


def import_seconds(env: dict[str, str]) -> float:
    """`import vitkit.cli`'s cumulative time from -X importtime."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import vitkit.cli"], env=env,
                         capture_output=True, text=True, check=True).stderr
    return int(next(line for line in err.splitlines()[::-1] if line.endswith("| vitkit.cli")).split("|")[1]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="The commit to compare with (git ref).")
    parser.add_argument("--runs", type=int, default=5, help="Timed runs per command and tree.")
    parser.add_argument("--json", type=Path, help="Also write the times as JSON.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vitkit-startup-") as tmp:
        trees = {"before": copy_tree(args.before, Path(tmp) / "before"), "after": copy_tree(None, Path(tmp) / "after")}
        envs = {name: environment(src) for name, src in trees.items()}
        rows = []
        for label, command in COMMANDS:
            times: dict[str, list[float]] = {name: [] for name in trees}
            for name in trees:
                wall(command, envs[name])  # writes the .pyc files
            for _ in range(args.runs):
                for name in trees:
                    times[name].append(wall(command, envs[name]))
            rows.append({"command": label, **{name: statistics.median(t) for name, t in times.items()}})
        imports = {name: statistics.median(import_seconds(env) for _ in range(args.runs)) for name, env in envs.items()}
        floor_app = Path(tmp) / "floor.py"
        floor_app.write_text(FLOOR_APP)
        floor = {}
        for label, words in (("--help", ["--help"]), ("hello --help", ["hello", "--help"])):
            command = [str(floor_app), *words]
            wall(command, envs["after"])
            floor[label] = statistics.median(wall(command, envs["after"]) for _ in range(args.runs))
    print(f"Medians of {args.runs} runs; before: {args.before}, after: this tree.")
    print()
    print("| command | before (s) | after (s) |")
    print("|---|---:|---:|")
    for row in rows:
        print(f"| {row['command']} | {row['before']:.2f} | {row['after']:.2f} |")
    print()
    print(f'`python -X importtime -c "import vitkit.cli"`: {imports["before"]:.3f} s before, {imports["after"]:.3f} s '
          "after (cumulative, median).")
    print()
    print("After, `--help`, a command's `--help` and a usage error build the command line from the commands' "
          "signatures alone: `import vitkit` no longer imports torch (its public names load on first use) and each "
          "command imports the library inside its function; tests/test_cli.py checks that none of torch, torchvision, "
          "matplotlib, scikit-learn is imported for them, and that `vitkit models` and `vitkit doctor --no-checks` "
          "import torch only (the registry builds each model on the meta device to count its parameters). What a "
          "command's `--help` costs beyond the imports is typer's: it builds a pydantic TypeAdapter for each option "
          "(vitkit's help is click's plain text: rich's option panels cost `vitkit train --help` another third of a "
          "second). A bare typer app of one command with 8 options, timed the same way: "
          f"{floor['--help']:.2f} s for `--help`, {floor['hello --help']:.2f} s for its command's `--help`.")
    if args.json is not None:
        args.json.write_text(json.dumps({"before": args.before, "runs": args.runs, "rows": rows, "import_vitkit_cli":
                                         imports, "typer_floor": floor}, indent=2) + "\n")


if __name__ == "__main__":
    main()
