"""Path records on disk: JSON Lines, appended safely, read back tolerantly.

See "Records" in docs/method.md.

A record is one dict per (image, method); see :meth:`PathResult.to_records`.
Appends write whole lines and fsync, so a killed run leaves at most one partial
last line, which :func:`read_records` ignores (and :func:`append_records`
truncates before writing again). Whole files are written atomically through a
temporary file and ``os.replace``.
"""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

__all__ = ["SCHEMA_VERSION", "append_records", "read_records", "upgrade_record", "write_text_atomic",
           "write_json_atomic"]

PathLike = Union[str, os.PathLike]

#: Version of the record layout, written in every record (``"schema"``) and in a run
#: folder's ``run.json``. Version 1 (records without ``"schema"``) named the
#: quadrature ``settings["method"]``; version 2 names it ``settings["approximation"]``.
SCHEMA_VERSION = 2


def upgrade_record(record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` in the current layout (a new dict; records already current are copied)."""
    record = dict(record)
    version = record.get("schema", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(f"record schema {version} is newer than this captum_paths reads ({SCHEMA_VERSION}); "
                         "upgrade captum_paths")
    if version < 2:
        settings = dict(record.get("settings") or {})
        if "method" in settings and "approximation" not in settings:
            settings["approximation"] = settings.pop("method")
        record["settings"] = settings
    record["schema"] = SCHEMA_VERSION
    return record


def read_records(path: PathLike) -> List[Dict[str, Any]]:
    """All complete records of a JSON Lines file (a torn last line is skipped), in the
    current layout (:func:`upgrade_record`)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn write of a killed run
            line = line.strip()
            if line:
                records.append(upgrade_record(json.loads(line)))
    return records


def append_records(path: PathLike, records: Iterable[Dict[str, Any]]) -> int:
    """Append records as whole lines, flushed and fsynced; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    lines = [json.dumps(r, sort_keys=True) + "\n" for r in records]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write a whole text file so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain write would have
        os.fchmod(fd, _plain_write_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _plain_write_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, or
    ``0o666`` less the process umask for a new file."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def write_json_atomic(path: PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _drop_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)
