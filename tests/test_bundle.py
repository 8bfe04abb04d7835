"""The bundle's static files: metadata valid against the model-zoo schema, logging config, licence, docs."""

import json
import logging.config

import pytest
from conftest import REPO, SHARED

BUNDLE = REPO / "bundle"
SCHEMA = SHARED / "schemas" / "meta_schema_20240725.json"


def test_metadata_valid_against_zoo_schema():
    if not SCHEMA.is_file():
        pytest.skip(f"model-zoo schema not found at {SCHEMA} (it cannot be downloaded offline)")
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_metadata_versions_are_consistent():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    import lecl_transforms

    assert meta["required_packages_version"]["lecl-transforms"] == lecl_transforms.__version__


def test_logging_conf_loads():
    logging.config.fileConfig(BUNDLE / "configs" / "logging.conf", disable_existing_loggers=False)


def test_licence_and_model_card_exist():
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    card = (BUNDLE / "docs" / "README.md").read_text()
    assert "z,y,x,label" in card  # the data contract is documented in the model card
