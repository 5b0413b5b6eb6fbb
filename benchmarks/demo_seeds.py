r"""Trains and evaluates the demo model with several seeds; writes the spread of every figure.

    .venv/bin/python benchmarks/demo_seeds.py --seeds 0,1,2 --data_dir data \
        --out docs/demo_seeds.json
    .venv/bin/python benchmarks/demo_seeds.py --variant raw --out docs/demo_seeds_raw.json

For each seed s: `oscar train` of `configs/demo.py:pretrain` and `configs/demo.py` with
`--config.seed=s` into `runs/demo_seed{s}_pretrain` and `runs/demo_seed{s}` (with
`--variant V`: `configs/demo.py:pretrain,V` and `configs/demo.py:V` into
`runs/demo_V_seed{s}_pretrain` and `runs/demo_V_seed{s}`), then
`oscar evaluate --distractors train` (finished runs are reused). The JSON holds every report's
headline figures and, per method and figure, the mean, standard deviation (ddof 1), min and
max; `oscar evaluate --reference` prints a run beside it (`make demo` does). The Markdown
table printed at the end is the README's demo table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from oscar_jax.evaluation.report import headline, seed_spread  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OSCAR = [sys.executable, "-m", "oscar_jax.cli"]


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def train_and_evaluate(seed: int, data_dir: str, runs: str, extra: list[str],
                       variant: str = "") -> dict:
    name = f"demo_{variant}_seed{seed}" if variant else f"demo_seed{seed}"
    pretrain, main = os.path.join(runs, f"{name}_pretrain"), os.path.join(runs, name)
    common = [f"--config.data_dir={data_dir}", f"--config.seed={seed}", *extra]
    pretrain_config = "configs/demo.py:pretrain" + (f",{variant}" if variant else "")
    main_config = "configs/demo.py" + (f":{variant}" if variant else "")
    run([*OSCAR, "train", "--config", pretrain_config, "--workdir", pretrain, *common])
    run([*OSCAR, "train", "--config", main_config, "--workdir", main,
         f"--config.init_from={pretrain}", "--config.report_at_end=False", *common])
    run([*OSCAR, "evaluate", "--workdir", main, "--distractors", "train"])
    with open(os.path.join(main, "report.json")) as f:
        return json.load(f)


def markdown(spread: dict) -> str:
    labels = list(next(iter(spread.values())))
    lines = ["| method | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, figures in spread.items():
        cells = []
        for label in labels:
            f = figures.get(label)
            cells.append("n/a" if f is None else
                         f"{f['mean']:.3f} ± {f['std']:.3f}" if f["runs"] > 1 else
                         f"{f['mean']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--data_dir", default="data", help="where the demo records are")
    parser.add_argument("--runs", default="runs", help="folder for the workdirs")
    parser.add_argument("--out", default="docs/demo_seeds.json", help="the spread JSON")
    parser.add_argument("--set", action="append", default=[],
                        help="extra --config.X=V flag for both phases (repeatable)")
    parser.add_argument("--variant", default="", choices=("", "raw"),
                        help="a configs/demo.py argument for both phases: 'raw' is the demo "
                             "model on the views as drawn (default records), no FF")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    reports = [train_and_evaluate(s, args.data_dir, args.runs, args.set, args.variant)
               for s in seeds]
    result = {
        "command": "python benchmarks/demo_seeds.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "date": datetime.date.today().isoformat(), "seeds": seeds, "runs": len(seeds),
        "records": sorted({os.path.relpath(os.path.join(ROOT, r["records"]), ROOT)
                            for r in reports}),
        "figures": {str(s): headline(r) for s, r in zip(seeds, reports, strict=True)},
        "spread": seed_spread(reports),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(markdown(result["spread"]))


if __name__ == "__main__":
    main()
