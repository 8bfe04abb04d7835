"""Datalists (``{"training": [{"image": ..., "points": ...}], "validation": [...], "test": [...]}``) and the
built-in synthetic data used when a config asks for it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.config import PathLike
from monai.data import load_decathlon_datalist

from ..errors import input_error

__all__ = [
    "load_datalist",
    "datalist_sections",
    "datalist_entries",
]


# -- datalist -----------------------------------------------------------------------------------------------------------
def _sections_of(content) -> list[str]:
    """Keys holding lists of entries (dicts or bare paths), not metadata such as a spacing list."""
    if not isinstance(content, dict):
        return []
    return sorted(k for k, v in content.items()
                  if isinstance(v, list) and v and all(isinstance(e, (dict, str)) for e in v))


def datalist_sections(path: PathLike) -> list[str]:
    """The sections (``training``, ``validation``, ...) a datalist JSON holds."""
    return _sections_of(json.loads(Path(path).read_text(encoding="utf-8")))


def load_datalist(
    path: PathLike, section: str = "training", required: Sequence[str] = ("image", "points"),
    file_fields: Sequence[str] = ("image", "points"),
) -> list[dict]:
    """Load one section of a decathlon-style datalist (``{"training": [{"image": ..., "points": ...}], ...}``).

    Relative paths are taken from the datalist's folder. Every entry must have the ``required`` fields and every
    ``file_fields`` path it has must exist; otherwise the error names the datalist, the entry and the field.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "datalist not found", "give the path of the datalist JSON (lecl synth writes one)")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise input_error(f"{path}, line {e.lineno}", f"invalid JSON ({e.msg})", "fix the JSON syntax") from None
    if not isinstance(content, dict) or section not in content:
        have = _sections_of(content)
        raise input_error(
            path, f"no '{section}' section (sections: {have})",
            f'add "{section}": [{{"image": "...", "points": "..."}}, ...] to the datalist',
        )
    entries = content[section]
    if not isinstance(entries, list) or not entries:
        raise input_error(f"{path}, '{section}'", "must be a non-empty list of entries", "list at least one image")
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and section == "test":
            continue  # MONAI turns a bare path in "test" into {"image": path}
        if not isinstance(entry, dict):
            raise input_error(f"{path}, {section}[{i}]", f"entry is a {type(entry).__name__}", 'write {"image": ...}')
        for field in required:
            if field not in entry:
                raise input_error(
                    f"{path}, {section}[{i}]", f"field '{field}' is missing", f'add "{field}": "path/to/file"'
                )
    base = path.resolve().parent  # absolute, so MONAI's joined paths and ours agree whatever the working directory
    resolved = load_decathlon_datalist(path, is_segmentation=False, data_list_key=section, base_dir=base)
    for i, entry in enumerate(resolved):
        for field in file_fields:
            if isinstance(entry.get(field), str):
                # MONAI joins "image" always and other fields only when they exist: join the rest for the message
                full = entry[field] if os.path.isabs(entry[field]) else os.path.normpath(base / entry[field])
                if not os.path.exists(full):
                    raise input_error(
                        f"{path}, {section}[{i}].{field}",
                        f"file not found: {full}",
                        "fix the path (relative paths are taken from the datalist's folder) or remove the entry",
                    )
                entry[field] = full
    return resolved


def datalist_entries(datalist: str | None, section: str, synthetic_dir: str, synthetic_images: int = 10,
                     seed: int = 0, synthetic_size: int = 256) -> list[dict]:
    """The ``section`` entries (``image``, ``points``) of ``datalist``; with no datalist, the built-in synthetic data
    (generated into ``synthetic_dir`` on first use, reused afterwards)."""
    if datalist is None:
        from dataclasses import replace

        from .synthetic import REGIMES
        from .synthetic_dataset import MANIFEST_NAME, write_dataset

        datalist = os.path.join(synthetic_dir, "datalist.json")
        manifest = os.path.join(synthetic_dir, MANIFEST_NAME)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            if not os.path.isfile(manifest):
                write_dataset(synthetic_dir, synthetic_images, seed, replace(REGIMES["clean"], size_yx=synthetic_size))
        else:
            # no collective here: configs resolve components in different orders on different processes, and a
            # barrier could interleave with DDP's own start-up broadcasts. Wait for the manifest, written last.
            _wait_for(manifest, timeout_s=600)
    entries = load_datalist(datalist, section)
    return [{"image": e["image"], "points": e["points"]} for e in entries]


def _wait_for(path: str, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not os.path.isfile(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s (written by the first process)")
        time.sleep(0.2)
