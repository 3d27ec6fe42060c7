"""Image folders in the ImageNet layout.

``root/<class folder>/**/<image>``: one sub-folder per class, class indices from
the sorted folder names (as ``torchvision.datasets.ImageFolder``) or from a
``label_map`` when the model's indices follow another order (ImageNet wnids).

Corrupt or unreadable files are found upfront, in ``__init__``, with a cheap
``PIL.Image.open(...).verify()`` (or a full decode with ``scan="decode"``): they
are left out of the dataset, listed in :attr:`ImageFolderDataset.unreadable` and
reported through :mod:`logging`. Damage the cheap check cannot see (a truncated
JPEG) surfaces when the image is loaded, as an :class:`UnreadableImageError`
naming the file. Only regular files (after following symlinks) are opened: a
FIFO, socket or device with an image's name is listed as unreadable, never
opened (opening a FIFO would wait forever). Folder symlinks are followed except
into the data folder (another class's images, relabeled), onto a folder holding
it, round a loop or into a folder already walked; each one not followed is
listed with its reason too. File names that hold a line break or a control
character are listed, and logged, as Python string literals (:func:`one_line`),
one file to a line. Images of more than 8 bits per channel (16-bit PNG and TIFF,
32-bit integer or float images) are scaled to 8 bits before any conversion, not
clipped.
"""
from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["IMG_EXTENSIONS", "MAX_CLASS_INDEX", "ImageFolderDataset", "UnreadableImageError", "read_label_map",
           "to_8bit", "open_image", "one_line", "escape_line", "within"]

logger = logging.getLogger(__name__)

IMG_EXTENSIONS: Tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)
_SCANS = ("verify", "decode", "none")

#: Class indices a label map may give are below this bound, checked before any model loads (the
#: largest published classifier heads, ImageNet-21k's 21843 classes, fit with room to spare); the
#: pipeline then checks them against the model's own number of classes.
MAX_CLASS_INDEX = 100_000

# what would split a line of a listing: line breaks and other control characters, and the
# surrogates that stand for undecodable bytes of a file name (no encoding can write those)
_NOT_ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(name: Union[str, os.PathLike]) -> str:
    """``name`` (a file name or path) as one printable line: itself, unless it holds a line break,
    a tab, another control character or undecodable bytes; then its Python string literal
    (``'a\\nb.png'``, which :func:`ast.literal_eval` reads back)."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return repr(text) if _NOT_ONE_LINE.search(text) else text


def escape_line(text: str) -> str:
    """A message with its line breaks and control characters escaped (``\\n``, ``\\x1b``)."""
    return _NOT_ONE_LINE.sub(lambda m: repr(m.group())[1:-1], str(text))


class UnreadableImageError(OSError):
    """An image file that cannot be decoded; ``path`` names it."""

    def __init__(self, path: Union[str, os.PathLike], reason: str) -> None:
        super().__init__(f"cannot read image {str(path)!r}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8 bits per channel: 16-bit (``I;16*``), 32-bit integer (``I``) and float
    (``F``) images are scaled to ``0..255`` by their type's range instead of clipped.

    ``I`` images with values up to 255 are taken as 8-bit data, up to 65535 as
    16-bit (how PIL opens 16-bit PNGs); float images in ``[0, 1]`` are scaled by
    255, others by their own maximum.
    """
    import numpy as np

    mode = image.mode
    if not (mode.startswith("I") or mode == "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if mode.startswith("I;16"):
        top = 65535.0
    elif mode == "I":
        peak = float(values.max()) if values.size else 0.0
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    else:  # "F"
        peak = float(np.nanmax(values)) if values.size else 0.0
        top = 1.0 if peak <= 1.0 else peak
    scaled = np.clip(np.rint(np.nan_to_num(values) * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def open_image(path: Union[str, os.PathLike], mode: Optional[str] = "RGB") -> Image.Image:
    """Decode an image file fully, at 8 bits per channel (:func:`to_8bit`), converted to
    ``mode`` (``None`` keeps the file's mode); :class:`UnreadableImageError` names a damaged file,
    or one that is not a regular file (a FIFO, socket or device is never opened)."""
    not_regular = _not_regular_file(path)
    if not_regular is not None:
        raise UnreadableImageError(path, not_regular)
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, with its name
            image = to_8bit(img)
            return image.convert(mode) if mode is not None and image.mode != mode else image.copy()
    except UnreadableImageError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError ...
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from exc


class ImageFolderDataset(Dataset):
    """Images in class sub-folders; items are ``(image, label, image_id)``.

    Args:
        root: folder holding one sub-folder per class (searched recursively;
            hidden files and folders are ignored).
        transform: maps a PIL image to a ``(C, H, W)`` tensor, e.g. the transform
            returned by :func:`captum_paths.model.loading.load_model`. Without one,
            images become float tensors in ``[0, 1]`` (``to_tensor``).
        label_map: folder name -> class index, as a dict or the path of a JSON
            file (``{"n01440764": 0, ...}``, a list of folder names in index
            order, or Keras' ``{"0": ["n01440764", "tench"], ...}``). Default:
            sorted folder names -> ``0..K-1``.
        extensions: file name endings (case-insensitive) that count as images.
        mode: PIL mode images are converted to before ``transform``
            (``"RGB"``; ``"L"`` for grayscale; ``None`` keeps the file's mode).
        scan: how to detect unreadable files upfront: ``"verify"`` (cheap
            header / checksum check), ``"decode"`` (full decode, also catches
            truncated JPEGs) or ``"none"`` (errors surface when loading).
        max_per_class: keep at most this many readable images per class (the
            first ones in sorted path order), e.g. for a quick ImageNet subset.

    Attributes:
        classes: sorted class folder names.
        class_to_idx: folder name -> label.
        samples: ``(path, label)`` for every readable image, sorted by path.
        targets: the labels of ``samples``.
        image_ids: paths relative to ``root``, posix style (``"cls/img.png"``).
        unreadable: ``(path, error message)`` for every skipped file.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        transform: Optional[Callable[[Image.Image], torch.Tensor]] = None,
        label_map: Optional[Union[Mapping[str, int], str, os.PathLike]] = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        mode: Optional[str] = "RGB",
        scan: str = "verify",
        max_per_class: Optional[int] = None,
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike); got {type(root).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None; got {type(transform).__name__}")
        if isinstance(extensions, str) or not extensions or not all(isinstance(e, str) for e in extensions):
            raise TypeError(f"extensions must be a non-empty sequence of str such as ('.png', '.jpg'); got {extensions!r}")
        if mode is not None and not isinstance(mode, str):
            raise TypeError(f"mode must be a PIL mode string such as 'RGB' or 'L', or None; got {mode!r}")
        if scan not in _SCANS:
            raise ValueError(f"scan must be one of {_SCANS}; got {scan!r}")
        if max_per_class is not None and (
            isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1
        ):
            raise ValueError(f"max_per_class must be a positive int or None; got {max_per_class!r}")

        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"dataset root {str(self.root)!r} {what}")
        self.transform = transform
        self.mode = mode
        self.extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)

        self.classes: List[str] = sorted(
            e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith(".")
        )
        if not self.classes:
            raise ValueError(
                f"dataset root {str(self.root)!r} has no class folders; expected root/<class>/<image> "
                "(one sub-folder per class)"
            )
        self.class_to_idx: Dict[str, int]
        self._label_names: Dict[int, str]
        self.class_to_idx, self._label_names = self._class_indices(label_map)

        self.samples: List[Tuple[str, int]] = []
        self.unreadable: List[Tuple[str, str]] = []
        self._unreadable_files: List[str] = []  # the image files among them, unescaped (the fingerprint's)
        folders: List[Tuple[str, str]] = []  # (folder symlink, why it was not followed)
        walked: set = set()  # real folders walked, over every class: each is walked once
        for cls in self.classes:
            kept = 0
            files, skipped = self._find_images(self.root / cls, walked)
            folders += skipped
            for path in files:
                if max_per_class is not None and kept >= max_per_class:
                    break
                error = _check_image(path, scan)
                if error is not None:
                    self.unreadable.append((one_line(path), escape_line(error)))
                    self._unreadable_files.append(str(path))
                    continue
                self.samples.append((str(path), self.class_to_idx[cls]))
                kept += 1
        files_unreadable = len(self.unreadable)
        self.unreadable += [(one_line(path), reason) for path, reason in folders]
        if folders:
            shown = "; ".join(f"{one_line(p)}: {e}" for p, e in folders[:5])
            more = f"; ... ({len(folders) - 5} more)" if len(folders) > 5 else ""
            logger.warning("did not follow %d folder symlink(s) under %s: %s%s",
                           len(folders), one_line(self.root), shown, more)
        if files_unreadable:
            shown = "; ".join(f"{p}: {e}" for p, e in self.unreadable[:min(5, files_unreadable)])
            more = f"; ... ({files_unreadable - 5} more)" if files_unreadable > 5 else ""
            logger.warning(
                "skipped %d unreadable image file(s) under %s: %s%s",
                files_unreadable, one_line(self.root), shown, more,
            )
        if not self.samples:
            raise ValueError(
                f"dataset root {str(self.root)!r} has no readable images with extensions "
                f"{', '.join(self.extensions)} in its class folders ({files_unreadable} unreadable"
                + (f", {len(folders)} folder symlink(s) not followed" if folders else "") + ")"
            )
        self.targets: List[int] = [label for _, label in self.samples]
        self.image_ids: List[str] = [Path(p).relative_to(self.root).as_posix() for p, _ in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int, str]:
        """Return ``(image (C, H, W), label, image_id)``."""
        path, label = self.samples[index]
        image = open_image(path, self.mode)
        if self.transform is not None:
            tensor = self.transform(image)
        else:
            from torchvision.transforms.functional import to_tensor

            tensor = to_tensor(image)
        return tensor, label, self.image_ids[index]

    def class_names(self) -> List[str]:
        """One name per class index ``0 .. max``: the human name a Keras-style label map gives
        (``{"0": ["n01440764", "tench"]}``), else the class folder's name (``"class {i}"`` for an
        index no folder has). Zero-shot classifiers turn these into text prompts."""
        names = {index: folder for folder, index in self.class_to_idx.items()}
        names.update(self._label_names)
        return [str(names.get(i, f"class {i}")).replace("_", " ") for i in range(max(names) + 1)]

    def fingerprint(self) -> str:
        """SHA-256 of what identifies the data: the class folders and their indices, and the
        id and file size of every image file found (unreadable ones included)."""
        import hashlib

        digest = hashlib.sha256()
        digest.update(json.dumps(sorted(self.class_to_idx.items())).encode())
        files = sorted([p for p, _ in self.samples] + self._unreadable_files)
        for path in files:
            size = os.stat(path).st_size if os.path.exists(path) else -1
            digest.update(f"{Path(path).relative_to(self.root).as_posix()}\t{size}\n".encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, "
            f"classes={len(self.classes)}, unreadable={len(self.unreadable)})"
        )

    def _find_images(self, folder: Path, walked: set) -> Tuple[List[Path], List[Tuple[str, str]]]:
        """The image files under the class folder ``folder``, each once, and ``(folder symlink, why)``
        for every folder symlink not followed. Folder symlinks, the class folder's own included, are
        followed except into the data folder, whose images are found under their own class (following
        would list them twice, relabeled), onto a folder holding the data folder, back up to a folder
        above them (a loop), or into a folder already walked (``walked``: real paths, over every class)."""
        found: List[Path] = []
        skipped: List[Tuple[str, str]] = []
        top = os.path.realpath(self.root)

        def why_not(dirpath: str, real: str, name: str) -> Optional[str]:
            """Why the folder ``dirpath/name`` (``real``: the real path of ``dirpath``) is not walked."""
            link = os.path.join(dirpath, name)
            target = os.path.realpath(link)
            what = f"folder symlink to {one_line(target)}" if os.path.islink(link) else f"folder {one_line(target)}"
            if within(target, top) and target != os.path.join(real, name):
                return (f"{what}, inside the data folder {one_line(top)}: not followed (its images are listed "
                        "under their own class)")
            if within(top, target):
                return f"{what}, which holds the data folder {one_line(top)}: not followed"
            if target in walked:
                return f"{what}, a folder already listed: not followed"
            if within(real, target):
                return f"{what}, a folder above it (a loop): not followed"
            return None

        reason = why_not(str(self.root), top, folder.name)
        if reason is not None:
            return [], [(str(folder), reason)]

        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in walked:
                dirnames[:] = []
                continue
            walked.add(real)
            keep = []
            for name in dirnames:
                if name.startswith("."):
                    continue
                reason = why_not(dirpath, real, name)
                if reason is None:
                    keep.append(name)
                else:
                    skipped.append((os.path.join(dirpath, name), reason))
            dirnames[:] = keep
            found.extend(
                Path(dirpath) / f
                for f in filenames
                if not f.startswith(".") and f.lower().endswith(self.extensions)
            )
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix()), skipped

    def _class_indices(self, label_map: Optional[Union[Mapping[str, int], str, os.PathLike]]
                       ) -> Tuple[Dict[str, int], Dict[int, str]]:
        """``class_to_idx`` and the human class names a Keras-style label map gives."""
        if label_map is None:
            return {cls: i for i, cls in enumerate(self.classes)}, {}
        mapping, names = _parse_label_map(label_map)
        missing = [cls for cls in self.classes if cls not in mapping]
        if missing:
            shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
            raise ValueError(
                f"label_map has no index for {len(missing)} of the {len(self.classes)} class folders "
                f"under {str(self.root)!r}: {shown}"
            )
        return {cls: mapping[cls] for cls in self.classes}, names


def read_label_map(label_map: Union[Mapping[str, int], Sequence[str], str, os.PathLike]) -> Dict[str, int]:
    """Return a ``{folder name: class index}`` dict from a mapping, a list or a JSON file.

    Accepted: ``{"n01440764": 0}``; a list of folder names in index order; Keras'
    ``imagenet_class_index.json`` (``{"0": ["n01440764", "tench"], ...}``).
    """
    return _parse_label_map(label_map)[0]


def _parse_label_map(label_map: Union[Mapping[str, int], Sequence[str], str, os.PathLike]
                     ) -> Tuple[Dict[str, int], Dict[int, str]]:
    """``({folder name: class index}, {class index: human name})``; the names come from a
    Keras-style map (``{"0": ["n01440764", "tench"]}``) and are ``{}`` for the other forms."""
    source = "label_map"
    names: Dict[int, str] = {}
    if isinstance(label_map, (str, os.PathLike)):
        path = Path(label_map).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"label_map file {str(path)!r} does not exist")
        try:
            label_map = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"label_map file {str(path)!r} is not valid JSON: {exc}") from exc
        source = f"label_map file {str(path)!r}"

    if isinstance(label_map, (list, tuple)):
        if not all(isinstance(name, str) for name in label_map):
            raise TypeError(f"{source} as a list must hold folder names (str) in class index order")
        mapping: Dict[str, int] = {name: i for i, name in enumerate(label_map)}
    elif isinstance(label_map, Mapping):
        values = list(label_map.values())
        if values and all(isinstance(v, (list, tuple)) and v and isinstance(v[0], str) for v in values):
            mapping = {}  # Keras: {"0": ["n01440764", "tench"]}
            for key, value in label_map.items():
                try:
                    mapping[value[0]] = int(key)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{source}: key {key!r} is not a class index") from exc
                if len(value) >= 2 and isinstance(value[1], str):
                    names[int(key)] = value[1]
        else:
            mapping = dict(label_map)
    else:
        raise TypeError(
            f"label_map must be a dict (folder name -> class index), a list of folder names or a JSON "
            f"file path; got {type(label_map).__name__}"
        )
    bad = {k: v for k, v in mapping.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
    if bad:
        shown = dict(list(bad.items())[:5])
        raise ValueError(f"{source}: class indices must be non-negative ints; got {shown}")
    huge = [(v, k) for k, v in mapping.items() if v >= MAX_CLASS_INDEX]
    if huge:
        index, name = max(huge, key=lambda item: item[0])
        more = f" (and {len(huge) - 1} more past the bound)" if len(huge) > 1 else ""
        raise ValueError(
            f"{source} (--label-map): class {name!r} has index {index}{more}; a class index must be "
            f"below the model's number of classes, and at most {MAX_CLASS_INDEX - 1} in any case"
        )
    return mapping, names


def within(path: str, folder: str) -> bool:
    """Whether the path ``path`` is ``folder`` or inside it (compared as given: pass real paths,
    :func:`os.path.realpath`, to follow links)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _not_regular_file(path: Union[str, os.PathLike]) -> Optional[str]:
    """Why ``path`` is not a regular file after following symlinks (a FIFO, socket, device, folder,
    a broken link), else ``None``; a ``stat``, nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "another kind of file")
    return f"not a regular file: {kind}; not opened"


def _check_image(path: Path, scan: str) -> Optional[str]:
    """Return an error message if the image cannot be read, else ``None``. A file that is not a
    regular file is refused whatever ``scan`` says, without opening it."""
    not_regular = _not_regular_file(path)
    if not_regular is not None:
        return not_regular
    if scan == "none":
        return None
    try:
        with Image.open(path) as img:
            if scan == "verify":
                img.verify()
            else:
                img.load()
    except Exception as exc:  # PIL raises many types: OSError, SyntaxError, ValueError, ...
        return f"{type(exc).__name__}: {exc}"
    return None
