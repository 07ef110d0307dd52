"""CelebA annotations: find the layout, parse the official files fast, select a split.

Three on-disk layouts are understood (``layout='auto'`` picks the first that matches):

- ``official``: ``ROOT/list_attr_celeba.txt`` (+ ``list_eval_partition.txt``, ``identity_CelebA.txt``)
  and images in ``ROOT/img_align_celeba/``.
- ``torchvision``: the same files under ``ROOT/celeba/`` (what ``torchvision.datasets.CelebA`` reads).
- ``kaggle``: ``ROOT/list_attr_celeba.csv`` and ``ROOT/list_eval_partition.csv``, images in
  ``ROOT/img_align_celeba/img_align_celeba/`` (the Kaggle zip nests the folder) or ``ROOT/img_align_celeba/``.

Labels are returned as float32 0/1 (the files store -1/1), in the same row order as the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceattr.errors import FaceattrError, did_you_mean, resolve_names

__all__ = [
    "LAYOUTS",
    "SPLITS",
    "CelebaSplit",
    "detect_layout",
    "read_attribute_names",
    "load_celeba",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("official", "torchvision", "kaggle")
SPLITS = ("train", "valid", "test", "all", "holdout")

_PARTITION_CODES = {"train": 0, "valid": 1, "test": 2}
_IMAGE_DIR = "img_align_celeba"
# Fallback split when no partition file exists: shares of train and valid (test gets the rest).
_FALLBACK_SHARES = (0.8, 0.1)
_SHOW = 5  # how many example names a warning or error lists


@dataclass
class CelebaSplit:
    """One selection of CelebA rows: file names, image paths, 0/1 labels and identities."""

    root: Path  # folder holding the annotation files
    layout: str
    split: str
    attributes: list[str]
    filenames: list[str]
    paths: list[Path]
    labels: np.ndarray  # float32 [N, A] in {0, 1}
    identities: np.ndarray | None  # int64 [N]; None when the data has no identity file

    def __len__(self) -> int:
        """Number of images."""
        return len(self.filenames)

    def subset(self, idx: np.ndarray | Sequence[int]) -> CelebaSplit:
        """Return the rows at `idx` (integer indices or a boolean mask) as a new split."""
        index = np.asarray(idx)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {index.shape}, expected ({len(self)},)")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False).reshape(-1)
        return CelebaSplit(
            root=self.root,
            layout=self.layout,
            split=self.split,
            attributes=list(self.attributes),
            filenames=[self.filenames[i] for i in index],
            paths=[self.paths[i] for i in index],
            labels=self.labels[index],
            identities=None if self.identities is None else self.identities[index],
        )


# --------------------------------------------------------------------------------------------
# Layout detection


@dataclass
class _Files:
    """Where one layout keeps its files (optional ones are None when absent)."""

    attr: Path
    partition: Path | None
    identity: Path | None
    images: Path


def _candidates(root: Path) -> dict[str, Path]:
    """The attribute file each layout would have under `root`."""
    return {
        "official": root / "list_attr_celeba.txt",
        "torchvision": root / "celeba" / "list_attr_celeba.txt",
        "kaggle": root / "list_attr_celeba.csv",
    }


def _check_root(root: str | Path) -> Path:
    """Return `root` as a Path, raising a one-line error when it is not an existing folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise FaceattrError(
            f"CelebA root not found: {path}; pass the folder that holds list_attr_celeba.txt "
            "(or its celeba/ subfolder, or the Kaggle CSVs)"
        )
    if not path.is_dir():
        raise FaceattrError(f"CelebA root {path} is a file, not a folder; pass the folder that holds it")
    return path


def _check_layout_name(layout: str) -> None:
    """Raise on a layout name that is neither 'auto' nor one of LAYOUTS."""
    if layout != "auto" and layout not in LAYOUTS:
        choices = ("auto", *LAYOUTS)
        raise FaceattrError(
            f"unknown CelebA layout '{layout}'{did_you_mean(layout, choices)}; choose from: {', '.join(choices)}"
        )


def detect_layout(root: str | Path) -> tuple[str, Path]:
    """Return (layout name, folder holding the annotation files) for a CelebA root."""
    path = _check_root(root)
    candidates = _candidates(path)
    for name, attr in candidates.items():
        if attr.is_file():
            return name, attr.parent
    looked = ", ".join(f"{p} ({name})" for name, p in candidates.items())
    raise FaceattrError(
        f"no CelebA annotations found in {path}: looked for {looked}; point root at the folder that holds them"
    )


def _resolve_layout(root: str | Path, layout: str) -> tuple[str, Path]:
    """Detect the layout, or check that the one asked for is really there."""
    _check_layout_name(layout)
    if layout == "auto":
        return detect_layout(root)
    path = _check_root(root)
    attr = _candidates(path)[layout]
    if not attr.is_file():
        raise FaceattrError(f"not a {layout}-layout CelebA folder: {attr} not found; try layout='auto'")
    return layout, attr.parent


def _first_existing(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of `names` that is a file in `folder`, or None."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _layout_files(layout: str, ann: Path) -> _Files:
    """Locate the attribute, partition, identity files and the image folder of one layout."""
    attr = ann / ("list_attr_celeba.csv" if layout == "kaggle" else "list_attr_celeba.txt")
    # The preferred format first, but accept the other extension: people mix Kaggle CSVs and official txts.
    ext = (".csv", ".txt") if layout == "kaggle" else (".txt", ".csv")
    partition = _first_existing(ann, [f"list_eval_partition{e}" for e in ext])
    identity = _first_existing(ann, [f"identity_CelebA{e}" for e in ext])
    images = ann / _IMAGE_DIR
    # The Kaggle zip (and a double unzip of the official one) nests img_align_celeba/img_align_celeba/.
    if (images / _IMAGE_DIR).is_dir():
        images = images / _IMAGE_DIR
    return _Files(attr=attr, partition=partition, identity=identity, images=images)


# --------------------------------------------------------------------------------------------
# Parsing. The full list_attr_celeba.txt has 202,599 rows x 40 values. Splitting it into Python
# strings and calling int() 8 million times takes seconds; vectorised passes over the raw bytes
# take a fraction of one. `_attr_fast` reads well-formed attribute files; `_table` is the general
# tokenizer (two-column files, odd spacing) and the one that names the bad line of a broken file.


def _read_bytes(path: Path) -> bytes:
    """The raw bytes of an annotation file (a UTF-8 byte-order mark dropped), or a one-line error."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FaceattrError(f"cannot read {path}: {e.strerror or e}; check the file and its permissions") from None
    return _drop_bom(path, data)


def _drop_bom(path: Path, data: bytes) -> bytes:
    """`data` without a UTF-8 byte-order mark; UTF-16 text is a one-line error."""
    # Editors on Windows save "Unicode" text as UTF-16 and UTF-8 with a BOM: the first would read as
    # fields split at every NUL byte, the second would glue the BOM onto the row count or a file name.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise FaceattrError(f"{path} is UTF-16 text; save it as UTF-8 (or ASCII), as the official CelebA files are")
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _header_names(path: Path, header: bytes, line_no: int, csv: bool) -> list[str]:
    """Attribute names from the header line (comma-separated after the id column in CSV, else whitespace)."""
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed(path, line_no, "the attribute-name header is not UTF-8 text") from None
    names = [h.strip() for h in text.strip().split(",")[1:]] if csv else text.split()
    if not names or any(not n for n in names):
        raise _malformed(path, line_no, "the attribute-name header is empty or has blank names")
    lowered = [n.lower() for n in names]  # names are matched case-insensitively
    twice = next((n for i, n in enumerate(names) if lowered[i] in lowered[:i]), None)
    if twice is not None:  # selecting it by name could only ever pick one of the columns
        raise _malformed(path, line_no, f"attribute {twice!r} appears twice in the header")
    return names


def _malformed(path: Path, line_no: int, what: str) -> FaceattrError:
    """A one-line error pointing at the bad line of an annotation file."""
    return FaceattrError(f"malformed annotation file {path}, line {line_no}: {what}; re-download or regenerate it")


@dataclass
class _Table:
    """Token boundaries of a whitespace/comma separated file: field j of row i is buf[start[i,j]:end[i,j]]."""

    buf: np.ndarray  # uint8, the body bytes plus a final newline
    start: np.ndarray  # int64 [rows, cols]
    end: np.ndarray  # int64 [rows, cols]
    line_no: np.ndarray  # int64 [rows], 1-based line number of each row in the file

    def text(self, i: int, j: int) -> str:
        """Field j of row i as text (for error messages)."""
        return bytes(self.buf[self.start[i, j] : self.end[i, j]])[:40].decode("utf-8", "replace")

    def column_str(self, j: int, path: Path) -> list[str]:
        """Field j of every row, decoded as UTF-8 (anything else is a malformed file)."""
        start, end = self.start[:, j], self.end[:, j]
        if start.size == 0:
            return []
        width = end - start
        if (width == width[0]).all():  # CelebA file names are all 10 bytes: gather them in one go
            names = _names_from_matrix(self.buf[start[:, None] + np.arange(width[0])])
            if names is not None:
                return names
        raw = self.buf.tobytes()
        out = []
        for i, (a, b) in enumerate(zip(start.tolist(), end.tolist())):
            try:
                out.append(raw[a:b].decode("utf-8"))
            except UnicodeDecodeError:
                raise _malformed(path, int(self.line_no[i]), f"{self.text(i, j)!r} is not UTF-8 text") from None
        return out

    def column_int(self, j: int, path: Path, what: str) -> np.ndarray:
        """Field j of every row as a non-negative integer."""
        start, end = self.start[:, j], self.end[:, j]
        width = end - start
        out = np.zeros(start.size, dtype=np.int64)
        bad = width > 18
        for k in range(int(width.max(initial=0)) if not bad.any() else 0):
            live = width > k
            digit = self.buf[np.minimum(start + k, self.buf.size - 1)].astype(np.int64) - ord("0")
            bad |= live & ((digit < 0) | (digit > 9))
            out = np.where(live, out * 10 + digit, out)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _malformed(path, int(self.line_no[i]), f"the {what} must be a non-negative integer, got {self.text(i, j)!r}")
        return out


def _separators(buf: np.ndarray, csv: bool) -> np.ndarray:
    """Boolean mask of field separators: whitespace and control bytes (CR, LF, tab, space), plus ',' in CSV."""
    sep = buf <= ord(" ")
    return sep | (buf == ord(",")) if csv else sep


def _table(path: Path, body: bytes, first_line_no: int, cols: int, csv: bool) -> _Table:
    """Split `body` into rows of exactly `cols` fields (blank lines skipped), or raise on the first bad row."""
    buf = np.frombuffer(b"\n" + body + b"\n", dtype=np.uint8)  # separators on both ends: fields pair up
    sep = _separators(buf, csv)
    edges = np.flatnonzero(sep[1:] != sep[:-1]) + 1  # alternately a field's first byte and one past its last
    start, end = edges[0::2], edges[1::2]
    newlines = np.flatnonzero(buf == ord("\n"))[1:]
    per_line = np.diff(np.searchsorted(start, newlines), prepend=0)
    wrong = np.flatnonzero((per_line != cols) & (per_line != 0))
    if wrong.size:
        k = int(wrong[0])
        raise _malformed(path, first_line_no + k, f"expected {cols} fields, found {int(per_line[k])}")
    line_no = np.flatnonzero(per_line) + first_line_no
    return _Table(buf=buf, start=start.reshape(-1, cols), end=end.reshape(-1, cols), line_no=line_no)


def _names_from_matrix(chars: np.ndarray) -> list[str] | None:
    """Decode equal-length names held as a uint8 [N, L] matrix (one decode call instead of N); None when not UTF-8."""
    if chars.shape[0] == 0:
        return []
    lines = np.empty((chars.shape[0], chars.shape[1] + 1), dtype=np.uint8)
    lines[:, :-1] = chars
    lines[:, -1] = ord("\n")
    try:
        return lines.tobytes().decode("utf-8").split("\n")[:-1]
    except UnicodeDecodeError:  # the caller's general path names the line
        return None


def _attr_fast(body: bytes, n_attr: int, csv: bool) -> tuple[list[str], np.ndarray] | None:
    """Fast path for well-formed attribute rows whose file names all have one length (as in CelebA).

    Every value is '1' or '-1', so once the file names are blanked out each value is exactly one
    b'1' byte and its sign is the byte before it: the whole file is read with a few vectorised
    passes. Returns None for anything unusual; the general tokenizer then parses it or reports the
    exact bad line.
    """
    if not body.endswith(b"\n"):
        body += b"\n"
    buf = np.frombuffer(body, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], ends[:-1] + 1))
    name_len = int(np.argmax(_separators(buf[: ends[0] + 1], csv)))
    if name_len == 0 or int((ends - starts).min()) < name_len + 2 * n_attr:
        return None  # blank or indented lines, or rows too short to hold every value
    name_chars = buf[starts[:, None] + np.arange(name_len + 1)]
    name_sep = _separators(name_chars, csv)
    if name_sep[:, :name_len].any() or not name_sep[:, name_len].all():
        return None
    work = buf.copy()
    work[starts[:, None] + np.arange(name_len)] = ord(" ")  # file names hold '1's too
    ones = np.flatnonzero(work == ord("1"))
    if ones.size != ends.size * n_attr:
        return None
    grid = ones.reshape(ends.size, n_attr)
    if (grid[:, 0] < starts).any() or (grid[:, -1] > ends).any():
        return None  # some row has too many values and the next too few
    sep = _separators(work, csv)
    is_one = work == ord("1")
    if (is_one[:-1] & ~sep[1:]).any():
        return None  # '11' or '1-1': not single values
    negative = work[ones - 1] == ord("-")
    if np.count_nonzero(~sep) != ones.size + np.count_nonzero(negative):
        return None  # some other byte ('0', 'x', a stray '-') is in a value column
    names = _names_from_matrix(name_chars[:, :name_len])
    if names is None:
        return None
    values = (1 - 2 * negative.view(np.int8)).reshape(grid.shape)  # int8 throughout: no 64-bit temporaries
    return names, values


def _split_lines(data: bytes, n: int) -> tuple[list[bytes], bytes]:
    """The first `n` lines (stripped) and the rest of the file."""
    parts = data.split(b"\n", n)
    head = [p.strip() for p in parts[:n]]
    return head + [b""] * (n - len(head)), parts[n] if len(parts) > n else b""


def _parse_attr(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse an attribute file (official txt or Kaggle csv) into (names, filenames, int8 [N, A] of -1/1)."""
    csv = path.suffix.lower() == ".csv"
    data = _read_bytes(path)
    if csv:
        (header,), body = _split_lines(data, 1)
        first_line_no, expected = 2, None
    else:
        (count, header), body = _split_lines(data, 2)
        try:
            expected = int(count)
        except ValueError:
            raise _malformed(path, 1, f"expected the row count, got {count[:40]!r}") from None
        first_line_no = 3
    names = _header_names(path, header, first_line_no - 1, csv)

    fast = _attr_fast(body, len(names), csv) if body.strip() else None
    if fast is not None:
        filenames, values = fast
    else:
        filenames, values = _parse_attr_rows(path, body, first_line_no, len(names), csv)
    if expected is not None and expected != len(filenames):
        raise _malformed(path, 1, f"the header says {expected} rows but the file has {len(filenames)} (truncated?)")
    ordered = np.array(filenames)
    # Official files are sorted by name, which proves the names unique without building a set.
    if ordered.size > 1 and not (ordered[1:] > ordered[:-1]).all() and len(set(filenames)) != len(filenames):
        seen: set[str] = set()
        dup = next(f for f in filenames if f in seen or seen.add(f))  # type: ignore[func-returns-value]
        raise FaceattrError(f"malformed annotation file {path}: file name {dup} appears more than once; re-download or regenerate it")
    return names, filenames, values


def _parse_attr_rows(
    path: Path, body: bytes, first_line_no: int, n_attr: int, csv: bool
) -> tuple[list[str], np.ndarray]:
    """General attribute-row parser: any spacing, any separator mix; raises on the first bad value."""
    table = _table(path, body, first_line_no, 1 + n_attr, csv)
    buf, start = table.buf, table.start[:, 1:]
    width = table.end[:, 1:] - start
    first = buf[start]
    positive = (width == 1) & (first == ord("1"))
    negative = (width == 2) & (first == ord("-")) & (buf[np.minimum(start + 1, buf.size - 1)] == ord("1"))
    bad = ~(positive | negative)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise _malformed(path, int(table.line_no[i]), f"values must be -1 or 1, got {table.text(i, j + 1)!r}")
    return table.column_str(0, path), np.where(positive, 1, -1).astype(np.int8)


def _parse_pairs(path: Path, what: str) -> tuple[list[str], np.ndarray]:
    """Parse a two-column 'filename value' file (txt, or csv with a header) into (filenames, int64 values)."""
    csv = path.suffix.lower() == ".csv"
    data = _read_bytes(path)
    body, first_line_no = data, 1
    if csv:
        (header,), rest = _split_lines(data, 1)
        if not header.split(b",")[-1].strip().isdigit():  # a header such as 'image_id,partition'
            body, first_line_no = rest, 2
    table = _table(path, body, first_line_no, 2, csv)
    return table.column_str(0, path), table.column_int(1, path, what)


def _align(filenames: list[str], path: Path, what: str) -> np.ndarray:
    """Read a two-column file and return its values in the order of `filenames`."""
    names, values = _parse_pairs(path, what)
    if names == filenames:  # the official files share one order: skip the lookup
        return values
    lookup = dict(zip(names, values.tolist()))
    if len(lookup) != len(names):  # which of two rows for one image is right cannot be told
        seen: set[str] = set()
        dup = next(f for f in names if f in seen or seen.add(f))  # type: ignore[func-returns-value]
        raise FaceattrError(f"malformed annotation file {path}: file name {dup} appears more than once; re-download or regenerate it")
    out = np.fromiter((lookup.get(f, -(2**62)) for f in filenames), dtype=np.int64, count=len(filenames))
    missing = [filenames[i] for i in np.flatnonzero(out == -(2**62))[:_SHOW]]
    if missing:
        n = int((out == -(2**62)).sum())
        raise FaceattrError(
            f"{path} has no {what} for {n} image(s) listed in the attribute file (e.g. {', '.join(missing)}); "
            "use annotation files from the same CelebA release"
        )
    return out


def read_attribute_names(root: str | Path, layout: str = "auto") -> list[str]:
    """Return the attribute names of a CelebA root in file order (reads only the header)."""
    layout, ann = _resolve_layout(root, layout)
    path = _layout_files(layout, ann).attr
    csv = path.suffix.lower() == ".csv"
    try:
        with open(path, "rb") as f:
            head = b"".join(f.readline() for _ in range(1 if csv else 2))
    except OSError as e:
        raise FaceattrError(f"cannot read {path}: {e.strerror or e}; check the file and its permissions") from None
    lines, _ = _split_lines(_drop_bom(path, head), 1 if csv else 2)
    return _header_names(path, lines[-1], len(lines), csv)


# --------------------------------------------------------------------------------------------
# Split selection


def _unit_hash(salt: str, seed: int, keys: Sequence[object]) -> np.ndarray:
    """Map each key to a number in [0, 1) that depends only on (salt, seed, key): stable across runs."""
    # hashlib, not hash(): Python salts str hashes per process, which would change the split every run.
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        digest = hashlib.blake2b(f"{salt}:{seed}:{key}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def _group_hash(salt: str, seed: int, filenames: list[str], identities: np.ndarray | None) -> np.ndarray:
    """Per-row hash of the row's identity (so one person never straddles two sides), else of its file name."""
    if identities is None:
        return _unit_hash(salt, seed, filenames)
    unique, inverse = np.unique(identities, return_inverse=True)
    return _unit_hash(salt, seed, unique.tolist())[inverse.reshape(-1)]


def _image_names(folder: Path) -> set[str]:
    """Names in the image folder, from one directory listing (16k stat calls would be slow on network disks)."""
    try:
        with os.scandir(folder) as it:
            return {entry.name for entry in it}
    except FileNotFoundError:
        raise FaceattrError(
            f"image folder not found: {folder}; unpack img_align_celeba.zip next to the annotation files"
        ) from None
    except NotADirectoryError:
        raise FaceattrError(f"{folder} is not a folder; it should hold the aligned CelebA JPEGs") from None


def load_celeba(
    root: str | Path,
    *,
    split: str = "train",
    attributes: Sequence[str] | None = None,
    layout: str = "auto",
    limit: int = 0,
    seed: int = 0,
    holdout_fraction: float = 0.0,
) -> CelebaSplit:
    """Load one split of CelebA: file names, image paths, 0/1 labels and identities.

    `attributes` selects columns by name (case-insensitive) in the order given; empty or None keeps all,
    in file order. `holdout_fraction` > 0 moves a seeded, identity-disjoint share of the train partition
    into split 'holdout'. `limit` > 0 keeps a seeded random sample of that many rows, in file order.
    Rows whose image file is missing are skipped with one warning.
    """
    if split not in SPLITS:
        raise FaceattrError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; choose from: {', '.join(SPLITS)}")
    if not 0.0 <= holdout_fraction < 1.0:
        raise FaceattrError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    if split == "holdout" and holdout_fraction <= 0.0:
        raise FaceattrError("split 'holdout' needs holdout_fraction > 0 (e.g. 0.1) to carve it out of train")
    if limit < 0:
        raise FaceattrError(f"limit must be >= 0 (0 keeps every image), got {limit}")

    layout, ann = _resolve_layout(root, layout)
    files = _layout_files(layout, ann)
    names, filenames, values = _parse_attr(files.attr)
    if isinstance(attributes, str):  # a lone name (or 'A,B') would otherwise be iterated letter by letter
        attributes = [a for a in attributes.replace(",", " ").split() if a]
    selected = resolve_names(attributes, names) if attributes else list(names)
    cols = [names.index(a) for a in selected]

    identities = _align(filenames, files.identity, "identity") if files.identity else None
    if files.partition is not None:
        partition = _align(filenames, files.partition, "partition")
        odd = np.flatnonzero((partition < 0) | (partition > 2))
        if odd.size:
            raise FaceattrError(
                f"{files.partition}: partition of {filenames[odd[0]]} is {partition[odd[0]]}; expected 0, 1 or 2"
            )
    else:
        u = _group_hash("faceattr-split", seed, filenames, identities)
        partition = np.where(u < _FALLBACK_SHARES[0], 0, np.where(u < sum(_FALLBACK_SHARES), 1, 2))
        logger.warning(
            "no list_eval_partition file in %s: using a seeded 80/10/10 train/valid/test split by %s (seed %d)",
            ann,
            "identity" if identities is not None else "file name (no identity file, so not identity-disjoint)",
            seed,
        )

    holdout = np.zeros(len(filenames), dtype=bool)
    if holdout_fraction > 0:
        # Thresholding a per-identity hash keeps a person wholly on one side, and a larger fraction
        # only ever adds identities, so holdouts with different fractions nest.
        u = _group_hash("faceattr-holdout", seed, filenames, identities)
        holdout = (partition == 0) & (u < holdout_fraction)

    if split == "all":
        mask = np.ones(len(filenames), dtype=bool)
    elif split == "holdout":
        mask = holdout
    else:
        mask = (partition == _PARTITION_CODES[split]) & ~holdout
    rows = np.flatnonzero(mask)

    present = _image_names(files.images)
    exists = np.fromiter((filenames[i] in present for i in rows), dtype=bool, count=len(rows))
    if not exists.all():
        gone = rows[~exists]
        logger.warning(
            "%d of %d annotation rows of split '%s' have no image in %s and are skipped (e.g. %s)",
            len(gone),
            len(rows),
            split,
            files.images,
            ", ".join(filenames[i] for i in gone[:_SHOW]),
        )
        rows = rows[exists]

    if rows.size == 0:
        hint = (
            "use split='valid', or holdout_fraction > 0 with split='holdout' to carve an evaluation set out of train"
            if split in ("test", "valid")
            else "check that the images are in " + str(files.images)
        )
        raise FaceattrError(f"split '{split}' of {ann} has no images; {hint}")

    if 0 < limit < rows.size:
        pick = np.random.default_rng(seed).choice(rows.size, size=limit, replace=False)
        rows = rows[np.sort(pick)]

    chosen = [filenames[i] for i in rows]
    result = CelebaSplit(
        root=ann,
        layout=layout,
        split=split,
        attributes=selected,
        filenames=chosen,
        paths=[files.images / f for f in chosen],  # '/' parses only the name: twice as fast as Path(dir, f)
        labels=(values[np.ix_(rows, cols)] > 0).astype(np.float32),
        identities=None if identities is None else identities[rows],
    )
    logger.info(
        "CelebA %s split '%s' from %s: %d images, %d attributes", layout, split, ann, len(result), len(selected)
    )
    return result
