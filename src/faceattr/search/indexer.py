"""Build and update an attribute index over a folder of images: incremental, resumable, parallel.

A run scans the folder, compares every image's size and mtime with what the index holds, removes
rows of deleted files, and sends only new or changed files through `index_batch` (detection +
alignment + attributes), one batch at a time. Each finished batch is committed in its own
transaction, so a run that is killed loses at most the batches in flight and the next run goes on
from there. Engines differ only in where `index_batch` runs: in this process ('local', workers=1),
in N spawned processes that each load their own model ('local', workers=N), or as a Ray Data job
('ray'); the writer is always this process.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import hashlib
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceattr.errors import FaceattrError
from faceattr.infer.backends import onnx_backend
from faceattr.search.protocol import Predictor
from faceattr.search.store import FaceRecord, FileEntry, FileRecord, IndexStore, ModelIdentity

__all__ = [
    "ENGINES",
    "IMAGE_EXTENSIONS",
    "IndexPlan",
    "IndexStats",
    "ModelSource",
    "build_index",
    "index_batch",
    "load_model",
    "model_identity",
    "plan_update",
    "scan_folder",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
ENGINES = ("local", "ray")

# A model by name/path (each process loads its own), a loaded model (this process only), or a
# picklable zero-argument callable that returns one (for workers that cannot load by name).
ModelSource = str | Path | Predictor | Callable[[], Predictor]


@dataclass
class IndexStats:
    """What one indexing run did."""

    scanned: int = 0
    unchanged: int = 0
    processed: int = 0
    deleted: int = 0
    faces: int = 0
    noface: int = 0
    errors: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """Processed images per wall-clock second of the whole run."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self), "images_per_second": round(self.images_per_second, 2)}


@dataclass
class IndexPlan:
    """What a run has to do: files to (re)process and indexed files that are gone."""

    todo: list[FileEntry]
    deleted: list[str]
    unchanged: int


def scan_folder(root: Path) -> list[FileEntry]:
    """Every image under `root` (recursive, sorted), skipping hidden folders; symlinked files are followed."""
    root = Path(root)
    out: list[FileEntry] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            it = list(os.scandir(folder))
        except OSError as e:
            logger.warning("cannot list %s: %s", folder, e)
            continue
        for d in it:
            if d.name.startswith("."):
                continue
            # Symlinked folders are not followed: they can loop, and they can lead out of the root.
            if d.is_dir(follow_symlinks=False):
                stack.append(Path(d.path))
            elif Path(d.name).suffix.lower() in IMAGE_EXTENSIONS:
                try:
                    st = d.stat(follow_symlinks=True)
                except OSError as e:
                    logger.warning("skipping %s: %s", d.path, e)
                    continue
                rel = Path(d.path).relative_to(root).as_posix()
                out.append(FileEntry(rel, int(st.st_size), int(st.st_mtime_ns)))
    out.sort(key=lambda e: e.path)
    return out


def plan_update(store: IndexStore, entries: Sequence[FileEntry], *, retry_errors: bool = False) -> IndexPlan:
    """Compare a scan with the index: new or changed (size/mtime) files to do, missing ones to delete."""
    known = store.file_states()
    todo: list[FileEntry] = []
    unchanged = 0
    for e in entries:
        state = known.get(e.path)
        if state is None or state[:2] != (e.size, e.mtime_ns) or (retry_errors and state[2] == "error"):
            todo.append(e)
        else:
            unchanged += 1
    present = {e.path for e in entries}
    deleted = sorted(p for p in known if p not in present)
    return IndexPlan(todo, deleted, unchanged)


def model_identity(model: Predictor, source: str) -> ModelIdentity:
    """Name, version digest, thresholds and whether it predicts age, for a loaded model, as the index records them."""
    meta = dict(getattr(model, "meta", None) or {})
    attributes = tuple(str(a) for a in model.attributes)
    thresholds = tuple(float(t) for t in np.asarray(model.thresholds, dtype=np.float64).ravel())
    if len(thresholds) != len(attributes):
        raise FaceattrError(f"model '{model.name}' has {len(thresholds)} thresholds for {len(attributes)} attributes")
    # The version must change whenever the weights change; a checkpoint's creation time does, and the
    # attributes and thresholds cover re-calibration of the same weights.
    fingerprint = {
        "name": model.name,
        "attributes": attributes,
        "thresholds": [round(t, 6) for t in thresholds],
        "created": meta.get("created"),
    }
    # Only when present, so the versions of models without age (and the indexes built with them) stay as they were.
    predicts_age = bool(getattr(model, "predicts_age", False))
    if predicts_age:
        fingerprint["age"] = meta.get("age") or True
    version = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    kept = {k: meta[k] for k in ("created", "versions") if k in meta}
    return ModelIdentity(model.name, version, source, attributes, thresholds, kept, predicts_age)


def index_batch(
    model: Predictor,
    root: Path,
    entries: Sequence[FileEntry],
    *,
    attributes: Sequence[str],
    batch_size: int = 32,
    max_faces: int = 10,
) -> list[FileRecord]:
    """Detect, align and predict every file of one batch; the per-batch function every engine runs."""
    paths = [str(Path(root).joinpath(*e.path.split("/"))) for e in entries]
    results = list(model.predict_many(paths, batch_size=batch_size, detect=True, align=True, max_faces=max_faces))
    if len(results) != len(entries):
        raise RuntimeError(f"predict_many returned {len(results)} results for {len(entries)} images")
    records: list[FileRecord] = []
    for entry, res in zip(entries, results):
        if res.error:
            records.append(FileRecord(entry, "error", error=str(res.error)))
        else:
            # Faces below the model's min_face size come back unclassified (no probabilities): they
            # cannot be searched by attribute, so they are not stored.
            faces = [
                FaceRecord(
                    box=tuple(float(v) for v in f.box),  # type: ignore[arg-type]
                    score=float(f.score if f.score is not None else 0.0),
                    landmarks=[(float(x), float(y)) for x, y in f.landmarks],
                    probs=np.asarray([f.probabilities[a] for a in attributes], dtype=np.float32),
                    age=None if getattr(f, "age", None) is None else float(f.age),
                )
                for f in res.faces
                if f.probabilities
            ]
            records.append(FileRecord(entry, "faces", faces) if faces else FileRecord(entry, "noface"))
    return records


def load_model(source: str, device: str = "cpu", backend: str = "auto") -> Predictor:
    """Load a model by shipped name or checkpoint path (module-level, so worker processes can pickle it)."""
    from faceattr.infer import load

    model: Predictor = load(source, device=device, backend=backend)
    return model


def _is_model(obj: object) -> bool:
    return hasattr(obj, "predict_many") and hasattr(obj, "attributes")


def _resolve_model(
    model: ModelSource, device: str, backend: str = "auto"
) -> tuple[Predictor, Callable[[], Predictor] | None, str]:
    """(model for this process, picklable loader for other processes or None, source name to record)."""
    if _is_model(model):
        return model, None, str(getattr(model, "name", "model"))  # type: ignore[return-value]
    if isinstance(model, (str, Path)):
        # A checkpoint path is recorded absolute, so later runs from another folder find it again.
        source = str(Path(model).resolve()) if Path(model).exists() else str(model)
        loader: Callable[[], Predictor] = functools.partial(load_model, source, device, backend)
        return loader(), loader, source
    if callable(model):
        loaded = model()
        return loaded, model, str(getattr(loaded, "name", "model"))
    raise TypeError(f"model must be a name, a path, a Predictor or a loader callable, not {type(model).__name__}")


def _batched(items: Sequence[FileEntry], n: int) -> Iterator[list[FileEntry]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


# -- engines: each yields the records of one batch at a time, in any order -------------------------

Records = Generator[list[FileRecord], None, None]


def _run_inline(model: Predictor, root: Path, batches: Iterable[list[FileEntry]], kw: dict[str, Any], threads: int | None) -> Records:
    with _thread_limit(threads, model):
        for batch in batches:
            yield index_batch(model, root, batch, **kw)


@contextmanager
def _thread_limit(threads: int | None, model: object = None) -> Iterator[None]:
    """Cap torch's, OpenCV's and the model's ONNX Runtime threads for the duration, then restore them."""
    if threads is None:
        yield
        return
    torch = sys.modules.get("torch")
    cv2 = sys.modules.get("cv2")
    ort = onnx_backend(model)
    before = (torch.get_num_threads() if torch else None, cv2.getNumThreads() if cv2 else None,
              ort.threads if ort else None, ort.spin if ort else None)
    if torch:
        torch.set_num_threads(threads)
    if cv2:
        cv2.setNumThreads(threads)
    if ort:
        ort.set_threads(threads, spin=False)  # spinning threads would take the cores the other workers use
    try:
        yield
    finally:
        if torch and before[0] is not None:
            torch.set_num_threads(before[0])
        if cv2 and before[1] is not None:
            cv2.setNumThreads(before[1])
        if ort and before[2] is not None:
            ort.set_threads(before[2], spin=before[3])


_WORKER_STATE: dict[str, Any] = {}


def _worker_init(loader: Callable[[], Predictor], threads: int) -> None:
    """Runs once in each worker process: split the cores, then load that process's own model."""
    # Set before the model's libraries start their thread pools (torch reads these at import)...
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _WORKER_STATE["model"] = loader()
    # ONNX Runtime reads none of those variables: its session is reopened with this worker's share.
    ort = onnx_backend(_WORKER_STATE["model"])
    if ort:
        ort.set_threads(threads, spin=False)
    # ...and applied again in case a library was imported before (e.g. by unpickling the loader).
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)


def _worker_batch(root: Path, batch: list[FileEntry], kw: dict[str, Any]) -> list[FileRecord]:
    return index_batch(_WORKER_STATE["model"], root, batch, **kw)


def _run_processes(
    loader: Callable[[], Predictor], root: Path, batches: Iterable[list[FileEntry]], kw: dict[str, Any], workers: int, threads: int
) -> Records:
    # spawn, not fork: forking a process that already runs torch/OpenMP threads can deadlock.
    ctx = mp.get_context("spawn")
    ex = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(loader, threads))
    try:
        it = iter(batches)
        pending: set[cf.Future[list[FileRecord]]] = set()
        # At most two batches per worker in flight: bounded memory, and little lost on a kill.
        for batch in it:
            pending.add(ex.submit(_worker_batch, root, batch, kw))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.add(ex.submit(_worker_batch, root, nxt, kw))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class _RayBatchIndexer:
    """Ray Data actor: loads its model once, then runs `index_batch` on one batch per call."""

    def __init__(self, loader: Callable[[], Predictor], root: str, kw: dict[str, Any], threads: int) -> None:
        _worker_init(loader, threads)
        self.root = Path(root)
        self.kw = kw

    def __call__(self, rows: dict[str, Any]) -> dict[str, Any]:
        out = []
        for batch_json in rows["batch"]:
            entries = [FileEntry(p, int(s), int(m)) for p, s, m in json.loads(batch_json)]
            records = _worker_batch(self.root, entries, self.kw)
            out.append(json.dumps([r.to_json() for r in records]))
        return {"records": out}


def ray_missing_message() -> str:
    """The one-line error shown when --engine ray is asked for without Ray installed."""
    return "--engine ray needs Ray, which is not installed; install it with: pip install 'faceattr[ray]'"


def _run_ray(
    loader: Callable[[], Predictor], root: Path, batches: Iterable[list[FileEntry]], kw: dict[str, Any], workers: int, threads: int
) -> Records:
    try:
        import ray
        import ray.data
    except ImportError:
        raise FaceattrError(ray_missing_message()) from None
    batch_list = [json.dumps([[e.path, e.size, e.mtime_ns] for e in b]) for b in batches]
    if not batch_list:
        return
    started_here = not ray.is_initialized()
    if started_here:
        # Local Ray on this machine's CPUs only; no dashboard, nothing listening beyond loopback.
        ray.init(num_cpus=max(workers, 1), num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        items = ray.data.from_items([{"batch": b} for b in batch_list], override_num_blocks=len(batch_list))
        ds = items.map_batches(
            _RayBatchIndexer,
            fn_constructor_kwargs={"loader": loader, "root": str(root), "kw": kw, "threads": threads},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            batch_format="numpy",
        )
        for row in ds.iter_rows():
            yield [FileRecord.from_json(d) for d in json.loads(row["records"])]
    finally:
        if started_here:
            ray.shutdown()


@contextmanager
def _sole_writer(index_path: Path) -> Iterator[None]:
    """Hold `INDEX.lock` for the whole update, so a second run on the same index waits, then finds only what is left."""
    from filelock import FileLock, Timeout

    # An OS lock (flock/LockFileEx) on a side file: the kernel drops it when its process dies, so a
    # killed run never leaves a stale lock behind, and SQLite's own locks stay per transaction.
    lock = FileLock(f"{index_path}.lock")
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.warning("%s is being updated by another `faceattr index` run; waiting for it to finish", index_path)
            lock.acquire()
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        raise FaceattrError(f"cannot create the index {index_path} ({e.strerror or e}{where}); "
                            "pass --out a path in a folder you can write") from None
    try:
        yield
    finally:
        lock.release()


def build_index(
    folder: str | Path,
    index_path: str | Path,
    model: ModelSource = "default",
    *,
    batch_size: int = 32,
    workers: int = 1,
    engine: str = "local",
    rebuild: bool = False,
    retry_errors: bool = False,
    max_faces: int = 10,
    device: str = "cpu",
    backend: str = "auto",
    threads: int | None = None,
    progress: bool = True,
    on_batch: Callable[[IndexStats], None] | None = None,
) -> IndexStats:
    """Create or update the index of every image under `folder`; returns what the run did.

    `backend` picks the classifier runtime for a model given by name or path (see `faceattr.infer.load`).
    `threads` caps the CPU threads of all processes together (split evenly between `workers`); None
    leaves one process at its libraries' defaults and gives each worker an equal share of the cores.
    `on_batch(stats)` is called after each committed batch with the running totals (for progress
    displays and benchmarks). Runs on the same index take turns (a lock on `INDEX.lock`): a second run
    waits for the first, then indexes only what the first left undone.
    """
    t0 = time.perf_counter()
    root = Path(folder)
    if not root.is_dir():
        raise FaceattrError(f"not a folder: {root}")
    root = root.resolve()
    if engine not in ENGINES:
        from faceattr.errors import did_you_mean

        raise FaceattrError(f"unknown engine '{engine}'{did_you_mean(engine, ENGINES)}; choose from: {', '.join(ENGINES)}")
    if workers < 1 or batch_size < 1 or (threads is not None and threads < 1):
        raise FaceattrError("--workers, --batch-size and --threads must be at least 1")
    if engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise FaceattrError(ray_missing_message()) from None

    loaded, loader, source = _resolve_model(model, device, backend)
    if loader is None and (workers > 1 or engine == "ray"):
        raise FaceattrError("parallel indexing loads one model per process: pass the model by name or path, not a loaded model")
    identity = model_identity(loaded, source)

    stats = IndexStats()
    with _sole_writer(Path(index_path)), IndexStore(index_path, create=True) as store:
        store.initialise(root, identity, rebuild=rebuild)
        entries = scan_folder(root)
        plan = plan_update(store, entries, retry_errors=retry_errors)
        stats.scanned, stats.unchanged = len(entries), plan.unchanged
        stats.deleted = store.delete_files(plan.deleted)
        logger.info(
            "%s: %d images, %d unchanged, %d to index, %d removed", root, len(entries), plan.unchanged, len(plan.todo), stats.deleted
        )
        kw = {"attributes": list(identity.attributes), "batch_size": batch_size, "max_faces": max_faces}
        batches = _batched(plan.todo, batch_size)
        stream: Records
        per_worker = max(1, (threads or os.cpu_count() or 1) // workers)
        if engine == "ray":
            assert loader is not None
            stream = _run_ray(loader, root, batches, kw, workers, per_worker)
        elif workers > 1:
            assert loader is not None
            stream = _run_processes(loader, root, batches, kw, workers, per_worker)
        else:
            stream = _run_inline(loaded, root, batches, kw, threads)

        from tqdm.auto import tqdm

        # closing(): on an error the engine's workers are shut down before the error propagates.
        with closing(stream), tqdm(total=len(plan.todo), unit="img", desc="indexing", disable=not progress or not plan.todo) as bar:
            for records in stream:
                store.write_records(records, identity)
                stats.batches += 1
                stats.processed += len(records)
                for r in records:
                    stats.faces += len(r.faces)
                    stats.noface += r.status == "noface"
                    stats.errors += r.status == "error"
                bar.update(len(records))
                bar.set_postfix(faces=stats.faces, errors=stats.errors, refresh=False)
                if on_batch is not None:
                    stats.seconds = time.perf_counter() - t0
                    on_batch(stats)
    stats.seconds = time.perf_counter() - t0
    logger.info(
        "indexed %d images (%d faces, %d without a face, %d unreadable) in %.1fs",
        stats.processed, stats.faces, stats.noface, stats.errors, stats.seconds,
    )
    return stats
