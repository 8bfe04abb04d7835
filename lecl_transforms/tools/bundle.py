"""Running the bundle's configs from the ``lecl`` commands: MONAI's bundle runner with the bundle's metadata and
logging, so ``lecl predict``/``evaluate``/``demo`` run exactly what ``python -m monai.bundle run`` runs."""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_dir", "run_bundle"]


def configs_dir() -> Path:
    """The bundle's ``configs`` folder (see :func:`~lecl_transforms.engines.default_bundle_root`); a clear error when
    there is none (``lecl`` run outside a bundle with the package installed from a wheel)."""
    from ..engines.config import BUNDLE_ENV, default_bundle_root
    from ..errors import input_error

    configs = Path(default_bundle_root()) / "configs"
    if not (configs / "metadata.json").is_file():
        raise input_error(configs, "no bundle configs here (the lecl commands run the bundle's configs)",
                          "run lecl from the bundle folder or the repository root, "
                          f"or set {BUNDLE_ENV}=/path/to/bundle")
    return configs


def run_bundle(run_id: str, *config_names: str, configure_logging: bool = True, bundle_dir=None,
               **overrides) -> None:
    """``monai.bundle.run(run_id)`` on ``configs/<name>`` (several are merged in order) with ``overrides`` as
    config keys. ``configure_logging=False`` leaves the caller's logging as it is (a server's own log);
    ``bundle_dir``: another bundle folder than the default one."""
    from monai.bundle import run

    configs = Path(bundle_dir) / "configs" if bundle_dir else configs_dir()
    files = [str(configs / name) for name in config_names]
    run(run_id, config_file=files[0] if len(files) == 1 else files, meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf") if configure_logging else False, **overrides)
