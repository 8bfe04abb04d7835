"""Decathlon-style datalists: relative paths, and errors that name the entry and field."""

import json

import pytest

from lecl_transforms import LECLInputError, load_datalist
from lecl_transforms.data import datalist_sections


@pytest.fixture
def files(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.tif").write_bytes(b"x")
    (tmp_path / "a.csv").write_text("z,y,x,label\n")
    return tmp_path


def write(folder, content):
    path = folder / "datalist.json"
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def test_relative_paths_resolved_from_datalist_folder(files):
    path = write(files, {"training": [{"image": "img/a.tif", "points": "a.csv", "note": "kept"}],
                         "test": ["img/a.tif"]})
    (entry,) = load_datalist(path, "training")
    assert entry["image"] == str(files / "img" / "a.tif")
    assert entry["points"] == str(files / "a.csv")
    assert entry["note"] == "kept"
    (test_entry,) = load_datalist(path, "test", required=("image",))
    assert test_entry["image"] == str(files / "img" / "a.tif")


def test_missing_file_names_entry_and_field(files):
    path = write(files, {"training": [{"image": "img/a.tif", "points": "a.csv"},
                                      {"image": "img/a.tif", "points": "b.csv"}]})
    with pytest.raises(LECLInputError) as e:
        load_datalist(path)
    assert "training[1].points" in str(e.value) and "b.csv" in str(e.value)


def test_missing_field_and_section(files):
    with pytest.raises(LECLInputError, match=r"training\[0\]: field 'points' is missing"):
        load_datalist(write(files, {"training": [{"image": "img/a.tif"}]}))
    with pytest.raises(LECLInputError, match=r"no 'validation' section \(sections: \['training'\]\)"):
        load_datalist(write(files, {"training": [{"image": "img/a.tif", "points": "a.csv"}]}), "validation")
    with pytest.raises(LECLInputError, match="non-empty list"):
        load_datalist(write(files, {"training": []}))


def test_bad_json_and_missing_datalist(files):
    with pytest.raises(LECLInputError, match="line 2.*invalid JSON"):
        load_datalist(write(files, '{"training": [\n  {"image": }]}'))
    with pytest.raises(LECLInputError, match="datalist not found"):
        load_datalist(files / "nope.json")


def test_relative_datalist_path_from_another_working_directory(files, monkeypatch):
    write(files, {"training": [{"image": "img/a.tif", "points": "a.csv"}]})
    monkeypatch.chdir(files.parent)
    (entry,) = load_datalist(f"{files.name}/datalist.json")
    assert entry["image"] == str(files / "img" / "a.tif") and entry["points"] == str(files / "a.csv")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "cp1252", "utf-16"])
def test_datalist_saved_with_bom_or_windows_encoding(files, encoding):
    (files / "imgé").mkdir()
    (files / "imgé" / "b.tif").write_bytes(b"x")
    path = files / "datalist.json"
    content = {"training": [{"image": "imgé/b.tif", "points": str(files / "a.csv")}]}  # absolute path kept
    path.write_bytes(json.dumps(content, ensure_ascii=False).encode(encoding))
    (entry,) = load_datalist(path)
    assert entry["image"] == str(files / "imgé" / "b.tif") and entry["points"] == str(files / "a.csv")
    assert datalist_sections(path) == ["training"]


@pytest.mark.parametrize("entry,field,shown", [({"image": "img/a.tif", "points": None}, "points", "null"),
                                               ({"image": 5, "points": "a.csv"}, "image", "5"),
                                               ({"image": ["img/a.tif"], "points": "a.csv"}, "image", "[")])
def test_field_that_is_not_a_path(files, entry, field, shown):
    with pytest.raises(LECLInputError) as e:
        load_datalist(write(files, {"training": [entry]}))
    msg = str(e.value)
    assert f"datalist.json, training[0].{field}: is {shown}" in msg and "not a file path" in msg
    assert f'write "{field}": "path/to/file"' in msg


def test_sections_of_bad_json_give_a_message(files):
    with pytest.raises(LECLInputError, match="datalist.json, line 1: invalid JSON"):
        datalist_sections(write(files, '{"training": [}'))
