"""`train` on the demo cohort, this checkout against an earlier commit, in one run on one machine; and whether
the two give the same numbers.

    .venv/bin/python benchmarks/train_time.py [--before-commit becc7ae] [--after-commit C] [--n 147]
                                              [--out benchmarks/out/train_time]

The commits are checked out into git worktrees under ``--out`` and imported from there (this checkout's
virtual environment, so the same packages). Each checkout, in its own process: `train` with an empty feature cache
(cold: habitats, features, CNN, every pathway and fusion), `train` again (warm: features from the cache, so the
time is the models'), then `evaluate`. The script prints the seconds, the ratios after/before, and the largest
difference between the two checkouts' AUCs, out-of-fold probabilities and thresholds (0 when the refactoring
changed no number). The demo's settings: seed 0, the "cpu-fast" CNN preset, 2 jobs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = r"""
import json, sys, time
from pathlib import Path
from DPETResponseLib import protocol
manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
config = {"seed": 0, "deep_preset": "cpu-fast"}
times = {}
for label in ("cold", "warm"):
    started = time.perf_counter()
    protocol.train(manifest, out / f"bundle_{label}", config=config, jobs=2, cache_dir=out / "cache", progress=False,
                   overwrite=True)
    times[label] = time.perf_counter() - started
protocol.evaluate(out / "bundle_warm", manifest, out / "report", jobs=2, cache_dir=out / "cache", progress=False,
                  n_boot=200)
bundle = json.loads((out / "bundle_warm" / "bundle.json").read_text())
metrics = json.loads((out / "report" / "metrics.json").read_text())
aucs = {f"{s}/{m}": v.get("auc") for s, b in metrics["splits"].items() for m, v in b["models"].items()}
print(json.dumps({"seconds": times, "aucs": aucs, "thresholds": bundle["thresholds"],
                  "oof": bundle["training_oof"], "file": protocol.__file__}))
"""


def run(checkout: Path, manifest: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(checkout), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", RUN, str(manifest), str(out)], capture_output=True, text=True,
                          env=env, cwd=out)
    if done.returncode:
        raise SystemExit(f"{checkout}: {done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(checkout), (result["file"], checkout)
    return result


def largest_difference(a: dict, b: dict) -> float:
    diffs = []
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        if isinstance(x, list):
            diffs += [abs(p - q) for p, q in zip(x, y) if isinstance(p, float)]
        elif isinstance(x, float) and isinstance(y, float):
            diffs.append(abs(x - y))
    return max(diffs, default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-commit", default="becc7ae")
    parser.add_argument("--after-commit", default=None, help="default: this checkout as it is")
    parser.add_argument("--n", type=int, default=147)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "train_time")
    args = parser.parse_args()
    out = args.out.resolve()
    checkouts = {"before": out / "before", "after": out / "after" if args.after_commit else ROOT}
    for label, commit in (("before", args.before_commit), ("after", args.after_commit)):
        if commit and not checkouts[label].exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(checkouts[label]), commit],
                           check=True, capture_output=True)
    sys.path.insert(0, str(ROOT))
    from DPETResponseLib.synthetic import make_cohort

    manifest = out / "cohort" / "manifest.csv"
    if not manifest.exists():
        make_cohort(out / "cohort", n=args.n, seed=0)
    results = {}
    for label, checkout in checkouts.items():
        started = time.perf_counter()
        results[label] = run(checkout, manifest, out / f"run_{label}")
        print(f"{label} ({checkout}): train cold {results[label]['seconds']['cold']:.1f} s, warm "
              f"{results[label]['seconds']['warm']:.1f} s (whole run {time.perf_counter() - started:.0f} s)",
              flush=True)
    b, a = results["before"], results["after"]
    for label in ("cold", "warm"):
        print(f"train {label}: before {b['seconds'][label]:.1f} s, after {a['seconds'][label]:.1f} s, "
              f"after/before {a['seconds'][label] / b['seconds'][label]:.2f}")
    print(f"largest difference after - before: AUCs {largest_difference(b['aucs'], a['aucs']):.2e}, "
          f"thresholds {largest_difference(b['thresholds'], a['thresholds']):.2e}, "
          f"out-of-fold probabilities {largest_difference(b['oof'], a['oof']):.2e}")
    for key in sorted(a["aucs"]):
        print(f"  {key:32s} before {b['aucs'].get(key)!s:>22s}  after {a['aucs'][key]!s:>22s}")


if __name__ == "__main__":
    main()
