"""IFStackReader: ZCYX/CZYX TIFF and NIfTI give the same (C, Z, Y, X) array and spacing; bad stacks fail clearly."""

import numpy as np
import pytest
import tifffile
from conftest import SPACING, make_czyx, write_imagej_zcyx, write_nifti_xyzc, write_ome_czyx
from monai.transforms import LoadImage, LoadImaged
from monai.utils import MetaKeys

from lecl_transforms import IFStackReader, LECLInputError, NucleiMarkerChannels, NucleiMarkerChannelsd, read_stack


@pytest.mark.parametrize(
    "writer,name",
    [(write_imagej_zcyx, "stack.tif"), (write_ome_czyx, "stack.ome.tif"), (write_nifti_xyzc, "stack.nii.gz")],
)
def test_round_trip_to_czyx(tmp_path, czyx, writer, name):
    path = writer(tmp_path / name, czyx)
    img = LoadImage(reader=IFStackReader(), image_only=True)(path)
    assert img.shape == czyx.shape
    assert img.dtype.is_floating_point
    np.testing.assert_array_equal(img.numpy(), czyx.astype(np.float32))
    np.testing.assert_allclose(img.meta["spacing"], SPACING)
    assert img.meta["spacing_source"] == "file"
    np.testing.assert_allclose(img.affine.numpy().diagonal()[:3], SPACING)


def test_all_formats_agree(tmp_path, czyx):
    loader = LoadImage(reader=IFStackReader(), image_only=True)
    arrays = [loader(w(tmp_path / n, czyx)).numpy() for w, n in
              ((write_imagej_zcyx, "a.tif"), (write_ome_czyx, "b.ome.tif"), (write_nifti_xyzc, "c.nii"))]
    assert all(np.array_equal(arrays[0], a) for a in arrays[1:])


def test_dictionary_loader_with_reader_name(tmp_path, czyx):
    path = write_imagej_zcyx(tmp_path / "s.tif", czyx)
    d = LoadImaged("image", reader="lecl_transforms.IFStackReader")({"image": str(path)})
    assert tuple(d["image"].shape) == czyx.shape


def test_nifti_in_millimetres_is_converted(tmp_path, czyx):
    path = write_nifti_xyzc(tmp_path / "mm.nii", czyx, spacing=(0.002, 0.0005, 0.0005), unit="mm")
    img = LoadImage(reader=IFStackReader(), image_only=True)(path)
    np.testing.assert_allclose(img.meta["spacing"], SPACING)


def test_plain_tiff_needs_axes_and_spacing(tmp_path, czyx):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, czyx)  # no ImageJ/OME metadata: axes unknown
    with pytest.raises(LECLInputError, match="which axis is which") as e:
        LoadImage(reader=IFStackReader(spacing=SPACING))(path)
    assert "plain.tif" in str(e.value) and "axes='ZCYX'" in str(e.value)
    with pytest.raises(LECLInputError, match="spacing") as e:
        LoadImage(reader=IFStackReader(axes="CZYX"))(path)
    assert "--spacing" in str(e.value)
    img = LoadImage(reader=IFStackReader(axes="CZYX", spacing=SPACING))(path)
    np.testing.assert_array_equal(img.numpy(), czyx)
    assert img.meta["spacing_source"] == "config"


def test_spacing_that_contradicts_the_file(tmp_path, czyx):
    path = write_imagej_zcyx(tmp_path / "s.tif", czyx)
    with pytest.raises(LECLInputError) as e:
        LoadImage(reader=IFStackReader(spacing=(9.0, 0.5, 0.5)))(path)
    msg = str(e.value)
    assert "s.tif" in msg and "(2, 0.5, 0.5)" in msg and "(9, 0.5, 0.5)" in msg and "dz differ" in msg
    assert "drop --spacing to use the file's, or pass --override-spacing to use yours" in msg
    img = LoadImage(reader=IFStackReader(spacing=(2.01, 0.5, 0.5)))(path)  # within 1%: the file's, silently
    np.testing.assert_allclose(img.meta["spacing"], SPACING)
    assert img.meta["spacing_source"] == "file"
    array, meta = read_stack(path, spacing=(9.0, 9.0, 9.0), override_spacing=True)
    np.testing.assert_allclose(meta["spacing"], (9.0, 9.0, 9.0))
    np.testing.assert_allclose(meta[MetaKeys.AFFINE].diagonal()[:3], (9.0, 9.0, 9.0))
    assert meta["spacing_source"] == "config (overrides file)"
    with pytest.raises(LECLInputError, match="--override-spacing") as e:
        IFStackReader(override_spacing=True)
    assert "--spacing DZ DY DX" in str(e.value)


def test_spacing_fills_what_the_file_leaves_out(tmp_path, czyx):
    path = tmp_path / "z_only.tif"  # ImageJ file stating only the z-step
    tifffile.imwrite(path, czyx.transpose(1, 0, 2, 3), imagej=True, metadata={"axes": "ZCYX", "spacing": 2.0,
                                                                              "unit": "um"})
    _, meta = read_stack(path, spacing=(2.0, 0.3, 0.3))
    np.testing.assert_allclose(meta["spacing"], (2.0, 0.3, 0.3))
    assert meta["spacing_source"] == "file+config"


@pytest.mark.parametrize("axes", ["ZZYX", "ZCYQ", "CYX", "zcyxx"])
def test_bad_axes_string_fails_at_construction(axes):
    with pytest.raises(LECLInputError) as e:
        IFStackReader(axes=axes)
    msg = str(e.value)
    assert msg.startswith("axes (--axes)") and f"'{axes}'" in msg and "axes='ZCYX'" in msg


def test_plain_4d_tiff_reads_with_axes(tmp_path, czyx):
    path = tmp_path / "plain4d.tif"
    tifffile.imwrite(path, czyx.transpose(1, 0, 2, 3))  # tifffile's shaped description keeps (Z, C, Y, X)
    array, meta = read_stack(path, axes="zcyx", spacing=SPACING)
    np.testing.assert_array_equal(array, czyx)
    assert meta["axes_in_file"] == "ZCYX"


@pytest.mark.parametrize("axes", ["ZCYX", None])
def test_flat_plane_stack_says_channels_and_slices_are_unknown(tmp_path, czyx, axes):
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, czyx.transpose(1, 0, 2, 3), metadata=None)  # stored as (10, Y, X)
    with pytest.raises(LECLInputError) as e:
        read_stack(path, axes=axes, spacing=SPACING)
    msg = str(e.value)
    assert "flat.tif" in msg and "10 planes stored without saying which are channels and which are slices" in msg
    fix = e.value.fix
    assert "Stack to Hyperstack" in fix and "imagej=True" in fix and "--axes" not in fix


def test_truncated_imagej_stack(tmp_path, czyx):
    path = write_imagej_zcyx(tmp_path / "cut.tif", czyx)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(LECLInputError) as e:
        LoadImage(reader=IFStackReader())(path)
    msg = str(e.value)
    assert "cut.tif" in msg and "truncated or incomplete (metadata announces 10 planes, 1 readable)" in msg
    assert "copy the file again" in msg and "2D image" not in msg


def test_ome_with_missing_planes_is_not_zero_filled(tmp_path, czyx):
    full = write_ome_czyx(tmp_path / "full.ome.tif", czyx)
    with tifffile.TiffFile(full) as tif:
        xml = tif.ome_metadata
    path = tmp_path / "part.ome.tif"  # the OME header announces 10 planes, the file holds 6
    tifffile.imwrite(path, czyx.reshape(10, 16, 20)[:6], description=xml, metadata=None)
    with pytest.raises(LECLInputError, match=r"metadata announces 10 planes, 6 readable") as e:
        LoadImage(reader=IFStackReader())(path)
    assert "part.ome.tif" in str(e.value)
    data = full.read_bytes()  # cut at the end: the OME-XML written last is lost, the planes are all there
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(LECLInputError, match="truncated or incomplete"):
        LoadImage(reader=IFStackReader(spacing=SPACING))(path)


def test_truncated_nifti(tmp_path, czyx):
    path = write_nifti_xyzc(tmp_path / "cut.nii", czyx)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LECLInputError, match="cut.nii: the file is truncated or incomplete"):
        read_stack(path)


def test_wrong_axes_length(tmp_path, czyx):
    path = write_ome_czyx(tmp_path / "s.ome.tif", czyx)
    with pytest.raises(LECLInputError, match="4 dimensions"):
        LoadImage(reader=IFStackReader(axes="ZYX"))(path)


def test_singleton_time_axis_is_dropped(tmp_path, czyx):
    path = tmp_path / "t.ome.tif"
    tifffile.imwrite(path, czyx[None], ome=True, metadata={"axes": "TCZYX", "PhysicalSizeX": 0.5,
                                                           "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0})
    img = LoadImage(reader=IFStackReader())(path)
    np.testing.assert_array_equal(img.numpy(), czyx)


def test_time_series_is_rejected(tmp_path, czyx):
    path = tmp_path / "t.ome.tif"
    tifffile.imwrite(path, np.stack([czyx, czyx]), ome=True, metadata={"axes": "TCZYX"})
    with pytest.raises(LECLInputError, match="axis T has size 2"):
        LoadImage(reader=IFStackReader(spacing=SPACING))(path)


def test_one_channel_is_rejected(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, make_czyx((1, 5, 16, 20))[0], imagej=True, metadata={"axes": "ZYX", "spacing": 2.0})
    with pytest.raises(LECLInputError, match="1 channel") as e:
        LoadImage(reader=IFStackReader(spacing=SPACING))(path)
    assert "one.tif" in str(e.value) and "Merge Channels" in str(e.value)


@pytest.mark.parametrize("shape,axes", [((2, 16, 20), "CYX"), ((2, 1, 16, 20), "CZYX")])
def test_2d_image_is_rejected(tmp_path, shape, axes):
    path = tmp_path / "flat.ome.tif"
    tifffile.imwrite(path, make_czyx(shape), ome=True, metadata={"axes": axes})
    with pytest.raises(LECLInputError, match="2D image where a 3D z-stack is expected"):
        LoadImage(reader=IFStackReader(spacing=SPACING))(path)


def test_nan_and_constant_images_are_rejected(tmp_path):
    data = make_czyx().astype(np.float32)
    data[1, 3, 4, 5] = np.nan
    path = write_ome_czyx(tmp_path / "nan.ome.tif", data)
    with pytest.raises(LECLInputError, match=r"1 NaN/infinite voxel\(s\), the first in channel 1, slice z=3"):
        LoadImage(reader=IFStackReader())(path)
    path = write_ome_czyx(tmp_path / "flat.ome.tif", np.full((2, 5, 16, 20), 7, np.uint16))
    with pytest.raises(LECLInputError, match="same value"):
        LoadImage(reader=IFStackReader())(path)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(LECLInputError, match="file not found"):
        LoadImage(reader=IFStackReader())(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(LECLInputError, match="not a readable TIFF"):
        LoadImage(reader=IFStackReader())(bad)


def test_channel_selection_reorders_and_validates(tmp_path):
    data = make_czyx((3, 4, 8, 8))
    data[2] = 5  # a blank channel
    out = NucleiMarkerChannels(nuclei_channel=1, marker_channel=0)(data)
    np.testing.assert_array_equal(out, data[[1, 0]])
    with pytest.raises(LECLInputError, match="marker_channel=3, but the image has 3 channels"):
        NucleiMarkerChannels(0, 3)(data)
    with pytest.raises(LECLInputError, match="both are 1"):
        NucleiMarkerChannels(1, 1)
    with pytest.raises(LECLInputError, match="channel 2 is blank"):
        NucleiMarkerChannelsd("image", 0, 2)({"image": data})

