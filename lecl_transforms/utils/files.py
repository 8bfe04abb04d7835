"""Files written safely: atomic writes and JSON, and the one output-folder guard of every ``lecl`` command.

Every command that writes a folder leaves a manifest in it (``lecl_synth.json``, ``lecl_prepare.json``,
``lecl_predict.json``, ``lecl_demo.json``; ``lecl_evaluate.json`` lists the few files ``lecl evaluate`` adds to a
folder, usually ``lecl predict``'s). A folder is written only if it is new or empty, or holds an earlier output
of the same command and ``--overwrite`` was given; never if it is (or contains) the folder of an input. So nothing a
user had is ever replaced without ``--overwrite``, and their own files never are. Files are written under a temporary
name beside their final one and renamed into place, so an interrupted run never leaves half a file under a final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import input_error

__all__ = ["atomic_path", "write_json", "plain_json", "sha256_of", "check_out_dir", "check_out_files", "make_dirs",
           "remove_empty_dirs",
           "write_manifest", "read_manifest", "remove_stale"]


# -- writing files safely ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """A fresh hidden temporary path beside ``final`` (same suffix, so writers that go by the extension still work);
    renamed onto ``final`` when the block succeeds, deleted when it fails."""
    final = Path(final)
    tmp = final.with_name(f".{final.stem}.tmp-{secrets.token_hex(4)}{final.suffix}")
    # created with the default permissions (umask applies), unlike mkstemp's 0600: lab members must read the results
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data are on disk before the name points at them
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path, content) -> Path:
    """Write ``content`` as indented JSON to ``path`` atomically (readers never see half a file); numpy values and
    paths are converted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(content, indent=2, default=_json_default) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def plain_json(content):
    """``content`` as it reads back from a JSON file (tuples become lists, numpy values and paths plain values):
    what a run records can be compared with what a later run computes."""
    return json.loads(json.dumps(content, default=_json_default))


def sha256_of(path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file's bytes (read in chunks: model files can be large)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- the output-folder guard -------------------------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _probe_writable(folder: Path, out: Path, option: str) -> None:
    """Try to create (and delete) a file: permission bits, read-only mounts and ACLs all show up the same way,
    and root, who ignores permission bits, is not refused for nothing."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".lecl_probe_", dir=folder)
    except OSError as e:
        what = "" if folder == Path(os.path.abspath(out)) else f" (its parent {folder})"
        raise input_error(f"{option} {out}", f"cannot write into this folder{what}: {e.strerror}",
                          f"choose a folder you can write to for {option}, or fix its permissions") from e
    os.close(fd)
    os.unlink(probe)


def read_manifest(path: Path) -> dict:
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise input_error(path, f"is not a readable lecl manifest ({e})",
                          "choose a new or empty output folder (nothing there is overwritten)") from e
    return content if isinstance(content, dict) else {}


def check_out_dir(out, *, command: str, manifest: str, overwrite: bool = False, inputs: Iterable = (),
                  targets: Iterable = (), option: str = "--out", resume_option: str | None = None) -> dict | None:
    """Refuse ``out`` unless ``command`` may write there; writes nothing. Returns the earlier manifest (or None).

    ``inputs``: files the command reads (``out`` must be neither their folder nor an ancestor of it). ``targets``:
    files it will write; with ``--overwrite`` each one that exists must be listed in the earlier manifest.
    ``resume_option``: the command's option that continues an earlier output (named in the refusal's fix); a command
    that resumes passes ``overwrite=True`` after checking the earlier output is its own to continue."""
    out = Path(out)
    where = f"{option} {out}"
    if out.exists() and not out.is_dir():
        raise input_error(where, "is a file, not a folder", f"give {option} a new or empty folder")
    existing = _nearest_existing(out)
    if not existing.is_dir():
        raise input_error(where, f"cannot be created: {existing} is a file",
                          f"give {option} a folder path whose parents are folders")
    resolved = out.resolve()
    for src in inputs:
        src = Path(src).resolve()
        if resolved == src.parent or resolved in src.parents:
            raise input_error(where, f"holds the input {src}",
                              f"choose a separate {option} folder: {command} never writes beside or over your data")
    earlier = None
    if out.is_dir() and any(out.iterdir()):
        if not (out / manifest).is_file():
            raise input_error(where, f"holds files lecl did not write (no {manifest} from an earlier {command})",
                              f"choose a new or empty {option} folder (nothing of yours is overwritten)")
        if not overwrite:
            resume = f", {resume_option} to finish it (only stacks without complete outputs are redone)" \
                if resume_option else ""
            raise input_error(where, f"holds an earlier {command} output",
                              f"pass --overwrite to replace it{resume}, or choose a new {option}")
        earlier = read_manifest(out / manifest)
        recorded = earlier.get("files")
        for target in targets:
            target = Path(target)
            if recorded is not None and target.exists() and target.relative_to(out).as_posix() not in recorded:
                raise input_error(target, f"exists and was not written by {command}",
                                  f"choose another {option} folder (nothing of yours is overwritten)")
    _probe_writable(out if out.is_dir() else existing, out, option)
    return earlier


def check_out_files(out, targets: Iterable[str], *, command: str, manifest: str, overwrite: bool = False,
                    option: str = "--out") -> dict | None:
    """:func:`check_out_dir` for a command that adds a few named files to a folder that may hold others (``lecl
    evaluate`` writes its metrics beside ``lecl predict``'s output): ``out`` must be (or become) a writable folder;
    each of ``targets`` (names inside ``out``) that exists must be listed in ``out/manifest`` (written by an earlier
    ``command``; a user's own file of that name is never replaced) and needs ``overwrite``. Writes nothing; returns
    the earlier manifest (or None)."""
    out = Path(out)
    where = f"{option} {out}"
    if out.exists() and not out.is_dir():
        raise input_error(where, "is a file, not a folder",
                          f"give {option} a folder (a new one, or one to add the results to)")
    existing = _nearest_existing(out)
    if not existing.is_dir():
        raise input_error(where, f"cannot be created: {existing} is a file",
                          f"give {option} a folder path whose parents are folders")
    earlier = read_manifest(out / manifest) if (out / manifest).is_file() else None
    recorded = set((earlier or {}).get("files", []))
    present = [name for name in targets if (out / name).exists()]
    foreign = [name for name in present if name not in recorded]
    if foreign:
        raise input_error(out / foreign[0], f"exists and was not written by {command} (not listed in {manifest})",
                          f"choose another {option} folder, or move your file away (nothing of yours is overwritten)")
    if present and not overwrite:
        raise input_error(where, f"holds an earlier {command} output ({', '.join(present)})",
                          f"pass --overwrite to replace it, or choose a new {option}")
    _probe_writable(out if out.is_dir() else existing, out, option)
    return earlier


def make_dirs(out) -> list[Path]:
    """Create ``out`` with its parents; returns the folders created, deepest first (for :func:`remove_empty_dirs`)."""
    out = Path(os.path.abspath(out))
    created = []
    path = out
    while not path.exists():
        created.append(path)
        path = path.parent
    out.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_dirs(folders: Iterable[Path]) -> None:
    """Remove folders this run created, deepest first, if they are empty (a failed run leaves no trace)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def write_manifest(out, name: str, content: dict) -> Path:
    """Write atomically: other processes (DDP ranks) wait for a manifest and read it at once."""
    return write_json(Path(out) / name, content)


def remove_stale(out, earlier: dict | None, keep: Iterable[str]) -> None:
    """After ``--overwrite``: delete files the earlier run listed in its manifest and this run did not rewrite
    (so the folder holds one consistent output); files it did not list are the user's and stay."""
    if not earlier:
        return
    out, keep = Path(out), set(keep)
    for rel in earlier.get("files", []):
        path = out / rel
        inside = not Path(rel).is_absolute() and ".." not in Path(rel).parts
        if rel not in keep and inside and path.is_file():
            path.unlink()
