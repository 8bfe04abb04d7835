"""Datalists (``{"training": [{"image": ..., "points": ...}], "validation": [...], "test": [...]}``) and the
built-in synthetic data used when a config asks for it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from monai.config import PathLike

from ..errors import input_error
from ..utils.names import decode_text

__all__ = [
    "read_datalist_json",
    "load_datalist",
    "datalist_sections",
]


# -- datalist ----------------------------------------------------------------------------------------------------------
def read_datalist_json(path) -> object:
    """Decoded content of a datalist JSON (UTF-8 with or without BOM, or cp1252); every problem as a message naming
    the file."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, "datalist not found", "give the path of the datalist JSON (lecl synth writes one)")
    text = decode_text(path.read_bytes(), path, "datalist", "save the datalist as UTF-8 text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise input_error(f"{path}, line {e.lineno}", f"invalid JSON ({e.msg})", "fix the JSON syntax") from None


def _sections_of(content) -> list[str]:
    """Keys holding lists of entries (dicts or bare paths), not metadata such as a spacing list."""
    if not isinstance(content, dict):
        return []
    return sorted(k for k, v in content.items()
                  if isinstance(v, list) and v and all(isinstance(e, (dict, str)) for e in v))


def datalist_sections(path: PathLike) -> list[str]:
    """The sections (``training``, ``validation``, ...) a datalist JSON holds."""
    return _sections_of(read_datalist_json(Path(path)))


def _join(base: Path, value: str) -> str:
    return os.path.normpath(value if os.path.isabs(value) else base / value)


def load_datalist(
    path: PathLike, section: str = "training", required: Sequence[str] = ("image", "points"),
    file_fields: Sequence[str] = ("image", "points"),
) -> list[dict]:
    """Load one section of a decathlon-style datalist (``{"training": [{"image": ..., "points": ...}], ...}``).

    The file may be UTF-8 (with or without BOM) or Windows cp1252 text. Relative paths are taken from the datalist's
    folder, absolute paths are kept. Every entry must have the ``required`` fields, and ``image`` and every
    ``file_fields`` field it has must be a path to an existing file; otherwise the error names the datalist, the
    entry and the field. Other string fields are joined to the datalist's folder only when that path exists (as
    MONAI's ``load_decathlon_datalist`` does), so notes stay as written.
    """
    path = Path(path)
    content = read_datalist_json(path)
    if not isinstance(content, dict) or section not in content:
        have = _sections_of(content)
        raise input_error(
            path, f"no '{section}' section (sections: {have})",
            f'add "{section}": [{{"image": "...", "points": "..."}}, ...] to the datalist',
        )
    entries = content[section]
    if not isinstance(entries, list) or not entries:
        raise input_error(f"{path}, '{section}'", "must be a non-empty list of entries", "list at least one image")
    base = path.resolve().parent  # absolute, so the paths do not depend on the working directory
    checked = [*file_fields, *(["image"] if "image" not in file_fields else [])]
    resolved = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and section == "test":
            entry = {"image": entry}  # decathlon datalists may list test images as bare paths
        if not isinstance(entry, dict):
            raise input_error(f"{path}, {section}[{i}]", f"entry is a {type(entry).__name__}", 'write {"image": ...}')
        for field in required:
            if field not in entry:
                raise input_error(
                    f"{path}, {section}[{i}]", f"field '{field}' is missing", f'add "{field}": "path/to/file"'
                )
        out = {}
        for field, value in entry.items():
            where = f"{path}, {section}[{i}].{field}"
            if field in checked and (value is not None or field in required):
                if not isinstance(value, str) or not value.strip():
                    raise input_error(
                        where, f"is {json.dumps(value)}, not a file path",
                        f'write "{field}": "path/to/file" (relative paths are taken from the datalist\'s folder)',
                    )
                full = _join(base, value)
                if not os.path.exists(full):
                    raise input_error(
                        where, f"file not found: {full}",
                        "fix the path (relative paths are taken from the datalist's folder) or remove the entry",
                    )
                out[field] = full
            elif isinstance(value, str) and value and os.path.exists(_join(base, value)):
                out[field] = _join(base, value)
            else:
                out[field] = value
        resolved.append(out)
    return resolved


