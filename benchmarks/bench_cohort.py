"""Cohort runner throughput and memory: serial, a 2-process pool and a 2-worker Dask LocalCluster on the same
cases in one run (each with an empty cache), then a fully cached rerun, and a projection to 7,000 cases.

    .venv/bin/python benchmarks/bench_cohort.py [--n 35] [--task analyse_case|radiomics]

Cases: the real STS FDG-PET cases of ../shared/data/sts_pet (image + expert mask). Task: `casefeatures.analyse_case`
(the `extract` task), or `radiomics` (PET metrics + pyradiomics on the whole tumour with the package's PET
settings) when the full analysis is not wanted. Peak memory is the largest sum of RSS over this process and all
its children (pool/Dask workers), sampled every 50 ms (shared pages are counted once per process, so an upper bound).

Projection: time(7000, N) = 7000 * c1 / (N * e), where c1 is the measured serial cost per case and e the measured
parallel efficiency at 2 workers (speed-up / 2, the better of pool and Dask), assumed to hold at N workers (it
ignores scheduler overhead growth and shared-disk contention, so large N is optimistic).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DPETResponseLib.cohort import limit_threads, run_cohort  # noqa: E402

STS = ROOT.parent / "shared" / "data" / "sts_pet"


def radiomics_task(image_path: str, mask_path: str, settings: dict, case_id: str) -> dict[str, float]:
    """PET metrics and whole-tumour pyradiomics features of one case."""
    from DPETResponseLib.features.petmetrics import pet_metrics
    from DPETResponseLib.features.radiomics import RadiomicsExtractor
    from DPETResponseLib.io.images import read_mask, read_pet
    from DPETResponseLib.io.validation import check_case

    image = read_pet(image_path, case=case_id)
    image, mask, _ = check_case(image, read_mask(mask_path, image, case=case_id), case_id)
    features = dict(pet_metrics(image, mask, case=case_id))
    radiomics, _ = RadiomicsExtractor.from_text(settings["radiomics_params_text"]).extract_with_warnings(
        image, {"whole": mask}, case=case_id)
    return {**features, **radiomics}


class PeakMemory:
    """Largest RSS sum of this process and its descendants while the block runs."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=35, help="number of STS cases (at most 35)")
    parser.add_argument("--task", choices=["analyse_case", "radiomics"], default="analyse_case")
    args = parser.parse_args()

    folders = sorted(p for p in STS.iterdir() if p.is_dir())[: args.n]
    cases = pd.DataFrame({"image": [str(p / "PET_image.nii.gz") for p in folders],
                          "mask": [str(p / "PET_mask.nii.gz") for p in folders]},
                         index=pd.Index([p.name for p in folders], name="case_id"))
    from DPETResponseLib.features.analysis import analyse_case, resolve_settings, with_habitat_model

    task = analyse_case if args.task == "analyse_case" else radiomics_task
    limit_threads()  # the serial run gets one thread, as each pool/Dask worker does: c1 is a one-core cost
    # the population habitats' centroids, learned once on these cases (not part of the timed runs)
    settings = resolve_settings(with_habitat_model(cases, {}, Path(tempfile.mkdtemp(prefix="bench_habitats_")),
                                                   progress=False))
    print(f"{len(cases)} STS cases, task {args.task}, {psutil.cpu_count()} CPU(s), python {sys.version.split()[0]}")

    work = Path(tempfile.mkdtemp(prefix="bench_cohort_"))
    runs, tables = {}, {}
    try:
        for label, jobs, scheduler in [("serial (jobs=1)", 1, None), ("process pool (jobs=2)", 2, None),
                                       ("Dask LocalCluster (2 workers)", 2, "local")]:
            cache = work / label.split()[0]
            with PeakMemory() as memory:
                started = time.perf_counter()
                result = run_cohort(cases, task, settings, cache, jobs=jobs, scheduler=scheduler, progress=False)
                seconds = time.perf_counter() - started
            runs[label] = (seconds, memory.peak, result.n_failed)
            tables[label] = result.table
            if label.startswith("serial"):
                started = time.perf_counter()
                rerun = run_cohort(cases, task, settings, cache, progress=False)
                cached_seconds = time.perf_counter() - started
                assert rerun.n_cached == len(result.table)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    serial_seconds = runs["serial (jobs=1)"][0]
    print(f"\n{'mode':32s} {'wall s':>8s} {'cases/s':>8s} {'speed-up':>8s} {'peak MB':>8s} {'failed':>6s}")
    for label, (seconds, peak, failed) in runs.items():
        print(f"{label:32s} {seconds:8.1f} {len(cases) / seconds:8.2f} {serial_seconds / seconds:8.2f} "
              f"{peak / 2**20:8.0f} {failed:6d}")
    print(f"{'fully cached rerun (jobs=1)':32s} {cached_seconds:8.2f} {len(cases) / cached_seconds:8.1f}")
    reference = tables["serial (jobs=1)"]
    for label, table in tables.items():
        if table is not reference:
            numeric = table.select_dtypes("number")
            difference = (numeric - reference[numeric.columns]).abs().max().max()
            same = table.index.equals(reference.index) and table.columns.equals(reference.columns)
            print(f"{label}: same rows/columns as serial: {same}; largest |difference|: {difference:.3g}")

    per_case = serial_seconds / len(cases)
    efficiency = max(serial_seconds / runs[m][0] for m in runs if not m.startswith("serial")) / 2
    print(f"\nserial cost per case c1 = {per_case:.2f} s; parallel efficiency at 2 workers e = {efficiency:.2f}")
    print("projected wall time for 7,000 cases = 7000 * c1 / (N * e):")
    for workers in (1, 2, 8, 32, 128):
        hours = 7000 * per_case / (workers * (1.0 if workers == 1 else efficiency)) / 3600
        print(f"  N = {workers:3d}: {hours:7.2f} h")
    print(f"resuming a finished 7,000-case cohort (cache hits only): ~{7000 * cached_seconds / len(cases):.0f} s")


if __name__ == "__main__":
    main()
