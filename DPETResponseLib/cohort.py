"""The cohort runner: one task per case, cached on disk, resumable, in parallel processes or on a Dask cluster.

Cache. Each finished case is one JSON file ``<cache_dir>/<task>/<kk>/<key>.json`` written to a temporary name and
renamed, so a run killed at any point (even SIGKILL) leaves only whole entries and a rerun resumes where it
stopped. ``key`` is the sha256 of: the sha256 of the image's, the mask's and any other input's bytes (every file
of a DICOM folder), the settings as canonical JSON, the task name and the library version. Results therefore
depend on file contents and settings only (``case_id`` is passed to the task for its messages); settings must
carry the *contents* of any file that matters, not just its path (`casefeatures.resolve_settings` folds in the
radiomics YAML). A content key would read every byte of every input on every run; a memo ``file-hashes.json``
reuses a file's hash while its path, size and mtime (ns) are unchanged, so a rerun over unchanged cases only stats
the files (an edit that keeps both size and mtime is not seen: touch the file). Failures are never cached: a fixed
file is retried on the next run.

Execution. ``jobs=1`` runs in this process; ``jobs=N`` uses a ProcessPoolExecutor (spawn start method, one thread
per worker process for BLAS/OpenMP/ITK/torch) with at most ``2N`` cases in flight so memory stays bounded;
``scheduler`` sends the same per-case calls to Dask (``"local"``: a LocalCluster of ``jobs`` single-threaded worker
processes, or ``"tcp://host:port"``: an existing cluster). Results travel back to this process, which alone writes the
cache: workers need the input files but not the cache folder. A worker process that dies (e.g. out of memory) fails
only the case that kills a worker running it alone (see `_run_parallel`); every other failure is caught per case
into the errors table and the cohort carries on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import __version__
from .core.errors import DPETError, InputError
from .core.files import sha256_file, write_text

_DESCRIBED_ERRORS = 20  # failed cases listed by CohortResult.describe()
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


class CohortError(DPETError):
    """No case of the cohort succeeded; ``.result`` holds the `CohortResult` with every case's error."""

    def __init__(self, message: str, result: "CohortResult"):
        super().__init__(message)
        self.result = result


@dataclass
class CohortResult:
    """What `run_cohort` returns: ``table`` (one row per succeeded case, manifest order, index ``case_id``),
    ``errors`` (``case_id, stage, message``; stage ``input`` = bad input, ``task`` = other exception,
    ``worker`` = the worker process died), ``warnings`` (``case_id, message``: `InputWarning`s raised by the task)
    and the counts."""

    table: pd.DataFrame
    errors: pd.DataFrame
    warnings: pd.DataFrame
    n_cached: int
    n_computed: int
    n_failed: int
    task_name: str
    seconds: float
    strict: bool = False

    @property
    def n_cases(self) -> int:
        return self.n_cached + self.n_computed + self.n_failed

    @property
    def exit_code(self) -> int:
        """2 when no case succeeded, 1 when ``strict`` and some case failed, else 0."""
        if self.n_cases and self.n_cached + self.n_computed == 0:
            return 2
        return 1 if self.strict and self.n_failed else 0

    def describe(self) -> str:
        lines = [f"{self.task_name}: {self.n_cases} case(s) in {self.seconds:.1f} s: {self.n_computed} computed, "
                 f"{self.n_cached} from cache, {self.n_failed} failed"
                 + (f", {len(self.warnings)} warning(s)" if len(self.warnings) else "")]
        lines += [f"  failed {row.case_id} [{row.stage}]: {row.message}"
                  for row in self.errors.head(_DESCRIBED_ERRORS).itertuples()]
        if len(self.errors) > _DESCRIBED_ERRORS:
            lines.append(f"  ... and {len(self.errors) - _DESCRIBED_ERRORS} more failed case(s) (see the errors table)")
        return "\n".join(lines)


def limit_threads() -> None:
    """One thread per worker process for OpenMP/BLAS, ITK and torch (N processes must not each use every core)."""
    for name in _THREAD_ENV:
        os.environ[name] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it the variables above still apply
        pass
    if "SimpleITK" in sys.modules:
        sys.modules["SimpleITK"].ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _plain(value):
    """A task's value as JSON-safe Python (numpy scalars -> Python); anything else is a task error."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"returned a {type(value).__name__}; a task returns dict[str, float | int | str | None]")


def _run_case(task, image: str, mask: str, settings: dict, case_id: str, inputs: dict, client_pid: int):
    """One case, in whichever process runs it (threads limited unless that is the client's own process, e.g. a
    threaded Dask worker); ``inputs``: the case's other input files, by keyword. Returns ``("ok", result,
    warnings)`` or ``("error", stage, message, warnings)``; only the death of the process itself escapes."""
    from .io.validation import InputWarning

    if os.getpid() != client_pid:
        limit_threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        try:
            raw = task(image, mask, settings, case_id, **inputs)
            if not isinstance(raw, dict):
                raise TypeError(f"returned a {type(raw).__name__}, not a dict")
            result = {str(name): _plain(value) for name, value in raw.items()}
            outcome = ("ok", result)
        except InputError as err:
            outcome = ("error", "input", err.problem)
        except Exception as err:  # one case's failure, whatever it is, must not stop the cohort
            outcome = ("error", "task", f"{type(err).__name__}: {err}")
    notes = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    for w in caught:
        if not issubclass(w.category, InputWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return (*outcome, notes)


class _Cache:
    """Per-case results under ``<cache_dir>/<task>/`` keyed by content hash (see the module docstring)."""

    def __init__(self, cache_dir, task_name: str, settings: dict):
        self.root = Path(cache_dir)
        self.folder = self.root / "".join(c if c.isalnum() or c in "._-" else "_" for c in task_name)
        try:
            self.settings_json = json.dumps(settings, sort_keys=True, separators=(",", ":"), allow_nan=True)
        except TypeError as err:
            raise DPETError(f"settings must be JSON-serialisable to key the cache: {err}") from None
        self.task_name = task_name
        self.memo_path = self.root / "file-hashes.json"
        try:
            self.memo = json.loads(self.memo_path.read_text())
        except (OSError, ValueError):
            self.memo = {}

    def _file_hash(self, path: Path) -> str:
        stat = path.stat()
        known = self.memo.get(str(path))
        if known and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        digest = sha256_file(path)
        self.memo[str(path)] = [stat.st_size, stat.st_mtime_ns, digest]
        return digest

    def _input_hash(self, path: str) -> str:
        path = Path(path)
        if path.is_dir():  # a DICOM series: every file, by relative name and content
            digest = hashlib.sha256()
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{file.relative_to(path).as_posix()}\0{self._file_hash(file)}\n".encode())
            return digest.hexdigest()
        return self._file_hash(path)

    def key(self, image: str, mask: str, inputs: dict) -> str:
        """The case's key; raises InputError when an input cannot be read."""
        try:
            parts = [self._input_hash(image), self._input_hash(mask)]
            parts += [f"{name}={self._input_hash(path)}" for name, path in sorted(inputs.items())]
        except OSError as err:
            raise InputError(f"cannot read {err.filename}: {err.strerror}") from None
        text = "\n".join([*parts, self.settings_json, self.task_name, __version__])
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def load(self, key: str) -> dict | None:
        try:
            return json.loads(self._path(key).read_text())
        except (OSError, ValueError):  # absent (or unreadable: recomputed and rewritten)
            return None

    def store(self, key: str, case_id: str, result: dict, notes: list[str]) -> None:
        entry = {"case_id": case_id, "task": self.task_name, "version": __version__, "result": result,
                 "warnings": notes}
        write_text(self._path(key), json.dumps(entry, allow_nan=True))

    def save_memo(self) -> None:
        write_text(self.memo_path, json.dumps(self.memo))


class _ProcessBackend:
    """A spawn-based process pool that can be rebuilt when a worker dies."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = self._new()

    def _new(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, *args):
        return self.pool.submit(_run_case, *args, os.getpid())

    @staticmethod
    def wait_first(futures):
        from concurrent.futures import FIRST_COMPLETED, wait

        return wait(futures, return_when=FIRST_COMPLETED).done

    @staticmethod
    def died(err: BaseException) -> bool:
        from concurrent.futures.process import BrokenProcessPool

        return isinstance(err, BrokenProcessPool)

    def restart(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskBackend:
    """Dask futures: ``"local"`` starts a LocalCluster of ``jobs`` single-threaded processes; an address connects."""

    def __init__(self, scheduler: str, jobs: int):
        from distributed import Client, LocalCluster

        self.cluster = None
        try:
            if scheduler == "local":
                self.cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
                self.client = Client(self.cluster)
            else:
                self.client = Client(scheduler, timeout="20s")
        except OSError as err:
            raise DPETError(f"cannot reach the Dask scheduler {scheduler!r}: {err}") from None

    def submit(self, *args):
        return self.client.submit(_run_case, *args, os.getpid(), pure=False)

    @staticmethod
    def wait_first(futures):
        from distributed import wait

        return wait(list(futures), return_when="FIRST_COMPLETED").done

    @staticmethod
    def died(err: BaseException) -> bool:
        from distributed import KilledWorker

        return isinstance(err, KilledWorker)

    def restart(self):  # Dask reschedules work of dead workers itself; KilledWorker means it gave up
        pass

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _task_name(task) -> str:
    return f"{task.__module__}.{task.__qualname__}"


def run_cohort(cases: pd.DataFrame, task, settings: dict, cache_dir, jobs: int = 1, scheduler=None,
               strict: bool = False, progress: bool = True, task_name: str | None = None,
               inputs: tuple[str, ...] = ()) -> CohortResult:
    """Run ``task(image_path, mask_path, settings, case_id) -> dict`` on every row of ``cases`` (index case_id,
    columns ``image``, ``mask``), reusing cached results; see the module docstring for cache and execution.
    ``inputs``: more columns of input files, passed to the task by their column name and part of the key.

    Raises `CohortError` when no case succeeds (its ``.result`` has the errors)."""
    from tqdm import tqdm

    started = time.perf_counter()
    if not {"image", "mask"} <= set(cases.columns):
        raise DPETError("cases need 'image' and 'mask' columns (a manifest from read_manifest)")
    duplicated = cases.index[cases.index.duplicated()]
    if len(duplicated):
        raise DPETError(f"duplicate case ids: {', '.join(map(str, duplicated.unique()[:10]))}")
    if int(jobs) < 1:
        raise DPETError(f"jobs must be at least 1, got {jobs}")
    parallel = int(jobs) > 1 or scheduler is not None
    if parallel and ("<locals>" in task.__qualname__ or task.__name__ == "<lambda>"):
        raise DPETError(f"task {task.__qualname__} must be a top-level function to run in worker processes")
    task_name = task_name or _task_name(task)
    cache = _Cache(cache_dir, task_name, settings)

    results: dict[str, dict] = {}
    errors: list[tuple[str, str, str]] = []
    notes: list[tuple[str, str]] = []
    todo: deque = deque()
    for case_id, row in cases.iterrows():
        case_id = str(case_id)
        try:
            extra = {name: row[name] for name in inputs}
            key = cache.key(row["image"], row["mask"], extra)
        except InputError as err:
            errors.append((case_id, "input", err.problem))
            continue
        entry = cache.load(key)
        if entry is not None:
            results[case_id] = entry["result"]
            notes += [(case_id, n) for n in entry.get("warnings", [])]
        else:
            todo.append((case_id, key, row["image"], row["mask"], extra))
    n_cached = len(results)
    bar = tqdm(total=len(cases), initial=n_cached + len(errors), desc=task_name.rsplit(".", 1)[-1], unit="case",
               disable=not progress, file=sys.stderr)

    def finish(case_id, key, outcome):
        if outcome[0] == "ok":
            _, result, case_notes = outcome
            cache.store(key, case_id, result, case_notes)
            results[case_id] = result
        else:
            _, stage, message, case_notes = outcome
            errors.append((case_id, stage, message))
        notes.extend((case_id, n) for n in case_notes)
        bar.update()

    try:
        if not parallel:
            for case_id, key, image, mask, extra in todo:
                finish(case_id, key, _run_case(task, image, mask, settings, case_id, extra, os.getpid()))
        elif todo:
            _run_parallel(todo, task, settings, int(jobs), scheduler, finish)
    finally:
        bar.close()
        cache.save_memo()

    order = [str(c) for c in cases.index]
    table = pd.DataFrame.from_dict({c: results[c] for c in order if c in results}, orient="index")
    table.index.name = "case_id"
    rank = {c: i for i, c in enumerate(order)}
    errors.sort(key=lambda e: rank[e[0]])
    result = CohortResult(
        table=table,
        errors=pd.DataFrame(errors, columns=["case_id", "stage", "message"]),
        warnings=pd.DataFrame(notes, columns=["case_id", "message"]),
        n_cached=n_cached, n_computed=len(results) - n_cached, n_failed=len(errors), task_name=task_name,
        seconds=time.perf_counter() - started, strict=strict)
    if len(cases) and not results:
        first = "; ".join(f"{e[0]}: {e[2]}" for e in errors[:3])
        raise CohortError(f"all {len(cases)} case(s) failed ({first}{'; ...' if len(errors) > 3 else ''})", result)
    return result


def _run_parallel(todo: deque, task, settings: dict, jobs: int, scheduler, finish) -> None:
    """Submit cases with at most ``2 * workers`` in flight; collect them as they complete.

    When a process-pool worker dies, every case in flight fails with it; those cases are rerun one at a time in a
    fresh pool, and a case that kills its worker while running alone is reported (stage ``worker``). Dask
    reschedules work of dead workers itself and raises KilledWorker when it gives up."""
    backend = _DaskBackend(scheduler, jobs) if scheduler is not None else _ProcessBackend(jobs)
    suspects: deque = deque()
    in_flight: dict = {}
    try:
        workers = len(backend.client.scheduler_info()["workers"]) if scheduler is not None else jobs
        limit = 2 * max(workers, 1)
        while todo or suspects or in_flight:
            if suspects and not in_flight:
                case_id, key, image, mask, extra = case = suspects.popleft()
                in_flight[backend.submit(task, image, mask, settings, case_id, extra)] = case
                alone = True
            while not suspects and todo and len(in_flight) < limit:
                case_id, key, image, mask, extra = case = todo.popleft()
                in_flight[backend.submit(task, image, mask, settings, case_id, extra)] = case
                alone = False
            died = False
            for future in backend.wait_first(in_flight):
                case = in_flight.pop(future)
                try:
                    outcome = future.result()
                except BaseException as err:
                    if not backend.died(err):
                        raise
                    died = True
                    if alone or scheduler is not None:
                        finish(case[0], case[1], ("error", "worker", f"the worker process died running this case "
                                                                     f"({type(err).__name__}: {err})", []))
                    else:
                        suspects.append(case)
                    continue
                finish(case[0], case[1], outcome)
            if died and scheduler is None:
                suspects.extend(in_flight.values())
                in_flight.clear()
                backend.restart()
    finally:
        backend.close()
