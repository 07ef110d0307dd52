"""UTKFace: ordinary people aged 1-116 with gender, age and race in the file names.

The official "Aligned & Cropped Faces" folder holds ``AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` files
(200x200 tight chips, GENDER 0 = male, RACE 0-4 = White, Black, Asian, Indian, Others). The data has
no identities and no official split; images of one person were collected in a row, so near-duplicates
sit next to each other in DATETIME order. `load_utkface` therefore splits by blocks of consecutive
DATETIME, seeded, so that a person's run of photos stays on one side.

The chips are framed much tighter than CelebA's aligned crops, and `predict` aligns faces in photos to
CelebA's frame. For training, `ChipFrame` places each chip in that frame with one fixed similarity:
YuNet's mean landmarks on UTKFace chips (`UTK_TEMPLATE`) onto CelebA's `TEMPLATE`. What falls outside
the chip is filled by edge replication, exactly as `predict` fills it when it aligns a chip.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faceattr.data.geometry import FRAME_SIZE, TEMPLATE, similarity_transform, warp_to_frame
from faceattr.data.transforms import Preprocess, _source_box, prepare_image
from faceattr.errors import FaceattrError, did_you_mean

__all__ = [
    "RACES",
    "AGE_BANDS",
    "UTK_TEMPLATE",
    "UTK_SPLITS",
    "UtkSplit",
    "ChipFrame",
    "read_chip_landmarks",
    "parse_utk_name",
    "age_band",
    "is_utkface",
    "find_utk_images",
    "load_utkface",
]

logger = logging.getLogger(__name__)

RACES = ("White", "Black", "Asian", "Indian", "Others")
# (label, lowest age, first age of the next band)
AGE_BANDS = (("under 15", 0, 15), ("15-29", 15, 30), ("30-49", 30, 50), ("50-69", 50, 70), ("70+", 70, 1000))
UTK_SPLITS = ("train", "valid", "test", "all")

# Mean YuNet landmarks (right eye, left eye, nose, right and left mouth corner) on 200x200 UTKFace
# chips: 1,500 chips of shared/utkface (seeded sample), padded 32 px by edge replication, all found at
# score >= 0.7, points scaled about their centroid so the median fitted scale is 1 (as for CelebA's
# TEMPLATE). Per-point spread 4-6 px: the chips are aligned, so one fixed map serves them all.
# Measured 2026-12-06 with scripts/derive_template.py --utkface.
UTK_TEMPLATE = np.array(
    [[57.37, 56.65], [135.27, 56.58], [94.86, 101.78], [63.75, 136.26], [129.74, 135.89]], dtype=np.float64
)

# AGE_GENDER_RACE_DATETIME.jpg.chip.jpg; official names also have a space before ".jpg"
# ("24_0_1_20170116220224657 .jpg.chip.jpg") or no dot at all ("55_0_0_20170116232725357jpg.chip.jpg").
_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\s*\.?jpg\.chip\.jpg$", re.IGNORECASE)
_NO_RACE = re.compile(r"^(\d+)_(\d+)_(\d+)\s*\.?jpg\.chip\.jpg$", re.IGNORECASE)
_SUBFOLDERS = ("UTKFace", "utkface", "crop_part1")
_BLOCK = 32  # images per DATETIME block of the split: a run of one person's photos stays together


@dataclass(frozen=True)
class ChipFrame:
    """Decode a UTKFace chip and place it in CelebA's 178x218 aligned frame (picklable for cache workers).

    By default every chip is placed by one fixed similarity (`template`: the chips' mean landmarks).
    With `landmarks` (a TSV written by scripts/utk_landmarks.py: file name, then the 10 coordinates
    `predict` aligns that chip by) each listed chip is placed by its own landmarks instead, so training
    sees the chips framed exactly as `predict` and `faceattr evaluate` will frame them; chips the file
    lists without landmarks (no face found) keep the fixed similarity.
    """

    template: tuple[tuple[float, float], ...] = tuple(map(tuple, UTK_TEMPLATE.tolist()))
    landmarks: str = ""
    # Warp each chip straight into the model input (the preprocess crop, or the whole frame, at its size)
    # instead of into the 178x218 frame first and resizing that: a face view then gets the chip's own
    # pixels (a 200 px chip's face fills about 200 px; through the frame it is 100 px, upsampled to 112).
    native: bool = False

    @property
    def key(self) -> str:
        """What the cache key needs to know about this framing."""
        key = f"utk-chip-frame-v1:{self.template}"
        if self.landmarks:
            key += f":landmarks={_landmarks_digest(self.landmarks)}"
        return key + (":native" if self.native else "")

    def matrix(self, width: int, height: int, name: str | None = None) -> np.ndarray:
        """The 2x3 map from a chip of this size (file `name`, if it has landmarks of its own) into the frame."""
        if name is not None and self.landmarks:
            own = read_chip_landmarks(self.landmarks).get(name)
            if own is not None:
                return similarity_transform(own, TEMPLATE)
        src = np.asarray(self.template, dtype=np.float64) * [width / 200.0, height / 200.0]
        return similarity_transform(src, TEMPLATE)

    def __call__(self, img: Image.Image, pre: Preprocess, path: str | Path | None = None) -> np.ndarray:
        """Chip (PIL, read from `path`) -> model input uint8 [H, W, 3], framed like an aligned CelebA crop."""
        img.load()
        rgb = np.asarray(img.convert("RGB"))
        name = Path(path).name if path is not None else None
        m = self.matrix(rgb.shape[1], rgb.shape[0], name)
        if self.native:
            return warp_to_frame(rgb, input_matrix(pre) @ np.vstack([m, [0.0, 0.0, 1.0]]), (pre.size[1], pre.size[0]))
        framed = warp_to_frame(rgb, m, FRAME_SIZE)
        return prepare_image(Image.fromarray(framed), pre)


def input_matrix(pre: Preprocess) -> np.ndarray:
    """The 2x3 map from the aligned frame's pixel grid to the model input's, as `prepare_image` resizes its crop."""
    # prepare_image maps the crop box's edges onto the output's edges (PIL's box=): output pixel j's centre is
    # x0 + (j + 0.5) * (x1 - x0) / out_w in continuous coordinates, i.e. minus 0.5 in OpenCV's pixel-centre ones.
    # The box is prepare_image's own (`_source_box`), so the two cannot drift apart.
    x0, y0, x1, y1 = _source_box(pre, *FRAME_SIZE)
    out_h, out_w = pre.size
    sx, sy = out_w / (x1 - x0), out_h / (y1 - y0)
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]], dtype=np.float64)


def _unreadable(path: str, e: OSError) -> FaceattrError:
    return FaceattrError(f"cannot read the landmarks file {path}: {e.strerror or e}; "
                         "write it with scripts/utk_landmarks.py or drop `landmarks`")


def _landmarks_digest(path: str) -> str:
    """sha256 of a landmarks file (part of the cache key: new landmarks, new cached pixels)."""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError as e:
        raise _unreadable(path, e) from None


def read_chip_landmarks(path: str) -> dict[str, np.ndarray]:
    """{file name: [5, 2] landmarks} from a TSV of scripts/utk_landmarks.py (names listed alone are left out)."""
    try:
        st = Path(path).stat()
    except OSError as e:
        raise _unreadable(path, e) from None
    # Parsed once per version of the file: a file rewritten in the same process (or before the cache's
    # worker processes fork) is read again, as its new digest in the cache key promises.
    return _parse_chip_landmarks(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _parse_chip_landmarks(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise _unreadable(path, e) from None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split("\t")
        if not fields[0] or len(fields) == 1:  # a blank line, or a chip without a face: it keeps the fixed framing
            continue
        if len(fields) != 11:
            raise FaceattrError(f"{path} line {n}: expected a file name and 10 coordinates, got {len(fields) - 1} "
                                "values; write the file again with scripts/utk_landmarks.py")
        try:
            out[fields[0]] = np.asarray([float(v) for v in fields[1:]], dtype=np.float64).reshape(5, 2)
        except ValueError:
            raise FaceattrError(f"{path} line {n}: a coordinate is not a number; write the file again with "
                                "scripts/utk_landmarks.py") from None
    return out


@dataclass
class UtkSplit:
    """One selection of UTKFace images with their labels."""

    root: Path
    split: str
    filenames: list[str]
    paths: list[Path]
    age: np.ndarray  # float32 [N], years
    male: np.ndarray  # float32 [N], 1 = male (the files say 0 = male)
    race: np.ndarray  # int64 [N], index into RACES
    datetime: list[str]

    def __len__(self) -> int:
        """Number of images."""
        return len(self.filenames)

    def subset(self, idx: np.ndarray | Sequence[int]) -> UtkSplit:
        """Return the rows at `idx` (integer indices) as a new split."""
        index = np.asarray(idx, dtype=np.int64).reshape(-1)
        return UtkSplit(self.root, self.split, [self.filenames[i] for i in index], [self.paths[i] for i in index],
                        self.age[index], self.male[index], self.race[index], [self.datetime[i] for i in index])

    @property
    def age_band(self) -> list[str]:
        """Each image's age band label (AGE_BANDS)."""
        return [age_band(a) for a in self.age]


def age_band(age: float) -> str:
    """The AGE_BANDS label of an age in years."""
    for label, lo, hi in AGE_BANDS:
        if lo <= age < hi:
            return label
    return AGE_BANDS[-1][0]


def parse_utk_name(name: str) -> tuple[int, int, int, str]:
    """(age, gender 0=male/1=female, race 0-4, datetime) from a UTKFace file name; ValueError says why not."""
    m = _NAME.match(name.strip())
    if m is None:
        if _NO_RACE.match(name.strip()):
            raise ValueError("no race field")
        raise ValueError("not AGE_GENDER_RACE_DATETIME.jpg.chip.jpg")
    age, gender, race, stamp = int(m[1]), int(m[2]), int(m[3]), m[4]
    if not 0 < age <= 120:
        raise ValueError(f"age {age} outside 1-120")
    if gender not in (0, 1):
        raise ValueError(f"gender {gender} is not 0 or 1")
    if race not in range(len(RACES)):
        raise ValueError(f"race {race} is not 0-4")
    return age, gender, race, stamp


def find_utk_images(root: str | Path) -> Path | None:
    """The folder under `root` (or `root` itself) that holds UTKFace chips, or None."""
    path = Path(root).expanduser()
    for folder in (*(path / s for s in _SUBFOLDERS), path):
        # Any case, as parse_utk_name reads it: copies made on Windows or macOS can end in .JPG.CHIP.JPG.
        if folder.is_dir() and any(p.name.lower().endswith(".jpg.chip.jpg") for p in folder.iterdir()):
            return folder
    return None


def is_utkface(root: str | Path) -> bool:
    """True when `root` holds a UTKFace folder (the official UTKFace/ or the chips themselves)."""
    return find_utk_images(root) is not None


def _split_blocks(stamps: list[str], seed: int, fractions: tuple[float, float]) -> np.ndarray:
    """Split code per image (0 train, 1 valid, 2 test): blocks of `_BLOCK` consecutive DATETIMEs, seeded."""
    order = np.argsort(np.asarray(stamps), kind="stable")
    n_blocks = -(-len(stamps) // _BLOCK)
    rng = np.random.default_rng([seed, 20170116])
    u = rng.random(n_blocks)
    valid_f, test_f = fractions
    block_code = np.where(u < test_f, 2, np.where(u < test_f + valid_f, 1, 0))
    codes = np.empty(len(stamps), dtype=np.int64)
    codes[order] = block_code[np.arange(len(stamps)) // _BLOCK]
    return codes


def load_utkface(
    root: str | Path,
    split: str = "train",
    *,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    limit: int = 0,
) -> UtkSplit:
    """Load one split of a UTKFace folder: labels from the file names, split by DATETIME blocks.

    Files whose names do not parse (e.g. the three official files without a race field) are skipped
    with one warning that counts them by reason. `limit` takes a seeded sample of the split.
    """
    if split not in UTK_SPLITS:
        raise FaceattrError(f"unknown UTKFace split '{split}'{did_you_mean(split, UTK_SPLITS)}; choose from: {', '.join(UTK_SPLITS)}")
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise FaceattrError(f"UTKFace split fractions must be in [0, 1) and sum below 1, got valid {valid_fraction}, test {test_fraction}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FaceattrError(f"UTKFace root not found: {path}; pass the folder that holds UTKFace/ (or the chips)")
    folder = find_utk_images(path)
    if folder is None:
        raise FaceattrError(f"no UTKFace images (*.jpg.chip.jpg) in {path} or its UTKFace/ folder; pass the folder that holds them")
    names, ages, genders, races, stamps = [], [], [], [], []
    skipped: Counter[str] = Counter()
    for f in sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(".jpg")):
        try:
            age, gender, race, stamp = parse_utk_name(f)
        except ValueError as e:
            skipped[str(e)] += 1
            continue
        names.append(f)
        ages.append(age)
        genders.append(gender)
        races.append(race)
        stamps.append(stamp)
    if skipped:
        logger.warning("UTKFace %s: skipped %d file(s) whose names carry no usable labels: %s", folder, sum(skipped.values()),
                       "; ".join(f"{n} {why}" for why, n in skipped.most_common()))
    if not names:
        raise FaceattrError(f"no UTKFace file in {folder} has a name AGE_GENDER_RACE_DATETIME.jpg.chip.jpg")
    codes = _split_blocks(stamps, seed, (valid_fraction, test_fraction))
    keep = np.arange(len(names)) if split == "all" else np.flatnonzero(codes == ("train", "valid", "test").index(split))
    if limit and limit < len(keep):
        keep = np.sort(np.random.default_rng([seed, 7]).choice(keep, size=limit, replace=False))
    out = UtkSplit(
        root=path,
        split=split,
        filenames=[names[i] for i in keep],
        paths=[folder / names[i] for i in keep],
        age=np.asarray(ages, dtype=np.float32)[keep],
        male=(1.0 - np.asarray(genders, dtype=np.float32))[keep],
        race=np.asarray(races, dtype=np.int64)[keep],
        datetime=[stamps[i] for i in keep],
    )
    logger.info("UTKFace %s: %d images (%s)", split, len(out), folder)
    return out
