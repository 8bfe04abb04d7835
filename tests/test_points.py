"""Point annotations: CSV and point-label volumes, and every bad input's message."""

import numpy as np
import pytest
import tifffile

from lecl_transforms import LECLInputError, LoadPoints, LoadPointsd, read_points

SHAPE = (5, 16, 20)


def write(tmp_path, text, name="p.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_numbers_and_words_in_file_order(tmp_path):
    path = write(tmp_path, "id,z,y,x,label\n7, 1,2,3,1\n8,4,15,19,positive\n9,0,0,0,Negative\n10,2,5,6.0,2\n")
    coords, labels = read_points(path, SHAPE)
    np.testing.assert_array_equal(coords, [[1, 2, 3], [4, 15, 19], [0, 0, 0], [2, 5, 6]])
    np.testing.assert_array_equal(labels, [1, 2, 1, 2])
    assert coords.dtype == np.int64


def test_columns_in_any_order(tmp_path):
    coords, labels = read_points(write(tmp_path, "label,x,y,z\n2,3,2,1\n"), SHAPE)
    np.testing.assert_array_equal(coords, [[1, 2, 3]])
    np.testing.assert_array_equal(labels, [2])


def test_point_outside_volume_names_line_and_shape(tmp_path):
    path = write(tmp_path, "z,y,x,label\n1,2,3,1\n5,2,3,1\n")
    with pytest.raises(LECLInputError) as e:
        read_points(path, SHAPE)
    msg = str(e.value)
    assert "p.csv, line 3" in msg and "(5, 2, 3)" in msg and "(5, 16, 20)" in msg and "0-based" in msg


def test_negative_coordinate(tmp_path):
    with pytest.raises(LECLInputError, match="line 2"):
        read_points(write(tmp_path, "z,y,x,label\n0,-1,3,1\n"), SHAPE)


def test_duplicate_points_name_both_lines(tmp_path):
    path = write(tmp_path, "z,y,x,label\n1,2,3,1\n2,2,2,2\n1,2,3,2\n")
    with pytest.raises(LECLInputError, match=r"line 2 and line 4.*\n?.*duplicate point \(z,y,x\) \(1, 2, 3\)"):
        read_points(path, SHAPE)


def test_unknown_label(tmp_path):
    with pytest.raises(LECLInputError, match=r"line 3: unknown label 'maybe'"):
        read_points(write(tmp_path, "z,y,x,label\n1,2,3,1\n1,2,4,maybe\n"), SHAPE)
    with pytest.raises(LECLInputError, match=r"unknown label '3'"):
        read_points(write(tmp_path, "z,y,x,label\n1,2,3,3\n", "q.csv"), SHAPE)


def test_header_and_content_errors(tmp_path):
    with pytest.raises(LECLInputError, match=r"lacks column\(s\) \['label'\]"):
        read_points(write(tmp_path, "z,y,x\n1,2,3\n"), SHAPE)
    with pytest.raises(LECLInputError, match="empty file"):
        read_points(write(tmp_path, "", "e.csv"), SHAPE)
    with pytest.raises(LECLInputError, match="no points"):
        read_points(write(tmp_path, "z,y,x,label\n", "h.csv"), SHAPE)
    with pytest.raises(LECLInputError, match="not numbers"):
        read_points(write(tmp_path, "z,y,x,label\n1,a,3,1\n", "n.csv"), SHAPE)
    with pytest.raises(LECLInputError, match="points file not found"):
        read_points(tmp_path / "missing.csv", SHAPE)


def _label_volume(tmp_path, vol, name="points.tif"):
    path = tmp_path / name
    tifffile.imwrite(path, vol, imagej=True, metadata={"axes": "ZYX"})
    return path


def test_point_label_volume(tmp_path):
    vol = np.zeros(SHAPE, np.uint8)
    vol[1, 2, 3] = 1
    vol[4, 10, 10:13] = 2  # a painted 3-voxel blob counts as one click at its centre
    coords, labels = read_points(_label_volume(tmp_path, vol), SHAPE)
    order = np.argsort(coords[:, 0])
    np.testing.assert_array_equal(coords[order], [[1, 2, 3], [4, 10, 11]])
    np.testing.assert_array_equal(labels[order], [1, 2])


def test_point_label_volume_errors(tmp_path):
    vol = np.zeros(SHAPE, np.uint8)
    vol[1, 2, 3:5] = [1, 2]
    with pytest.raises(LECLInputError, match="mixes labels 1 and 2"):
        read_points(_label_volume(tmp_path, vol), SHAPE)
    with pytest.raises(LECLInputError, match=r"shape \(Z, Y, X\) \(5, 16, 20\), the image \(6, 16, 20\)"):
        read_points(_label_volume(tmp_path, vol, "b.tif"), (6, 16, 20))
    vol[:] = 0
    vol[0, 0, 0] = 7
    with pytest.raises(LECLInputError, match=r"values \[7\] in the point-label volume"):
        read_points(_label_volume(tmp_path, vol, "c.tif"), SHAPE)
    with pytest.raises(LECLInputError, match="all zeros"):
        read_points(_label_volume(tmp_path, np.zeros(SHAPE, np.uint8), "d.tif"), SHAPE)


def test_load_points_dict_uses_image_shape(tmp_path):
    path = write(tmp_path, "z,y,x,label\n4,15,19,2\n")
    d = LoadPointsd("points", image_key="image")({"image": np.zeros((2, *SHAPE)), "points": str(path)})
    np.testing.assert_array_equal(d["points"], [[4, 15, 19]])
    np.testing.assert_array_equal(d["point_labels"], [2])
    with pytest.raises(LECLInputError, match="outside the image"):
        LoadPointsd("points")({"image": np.zeros((2, 4, 16, 20)), "points": str(path)})


def test_load_points_from_array():
    coords, labels = LoadPoints()(np.array([[1, 2, 3, 2]]), SHAPE)
    np.testing.assert_array_equal(coords, [[1, 2, 3]])
    with pytest.raises(LECLInputError, match="labels"):
        LoadPoints()(np.array([[1, 2, 3, 5]]), SHAPE)


def test_csv_with_bom_or_windows_encoding(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("z,y,x,label\n1,2,3,1\n".encode("utf-8-sig"))
    np.testing.assert_array_equal(read_points(path, SHAPE)[0], [[1, 2, 3]])
    path = tmp_path / "win.csv"  # Excel on Windows: cp1252, "é" is byte 0xE9 (invalid UTF-8)
    path.write_bytes("z,y,x,label,remarque é\n1,2,3,1,noyau pâle\n4,5,6,positive,\n".encode("cp1252"))
    coords, labels = read_points(path, SHAPE)
    np.testing.assert_array_equal(coords, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(labels, [1, 2])
    path.write_bytes("z,y,x,label\n1,2,3,négatif\n".encode("cp1252"))
    with pytest.raises(LECLInputError, match="win.csv, line 2: unknown label 'négatif'") as e:
        read_points(path, SHAPE)
    assert "use 1 or 'negative'" in str(e.value)
