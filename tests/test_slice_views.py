"""Single z-slices as training views: weak labels of each slice on a hand-made stack, and the view draw."""

import numpy as np
import pytest

from lecl_transforms import RandSliceViewd, SliceViews, SliceViewsd
from lecl_transforms.errors import LECLInputError
from lecl_transforms.transforms.utils import IGNORE


def hand_made_stack():
    """5 slices of 8 x 8: one nucleus (cell 1) on slices 1-2, 3 x 3 at (2..4, 2..4) on slice 1 and only its
    centre pixel on slice 2 (a tapering tip); the EMIP label: that 3 x 3 nucleus, background in column 7,
    ignore elsewhere."""
    z, y, x = 5, 8, 8
    image = np.zeros((2, z, y, x), np.float32)
    image[0, 1, 2:5, 2:5] = 100.0
    image[0, 2, 3, 3] = 100.0
    image[1, 1, 2:5, 2:5] = 50.0
    label = np.full((1, y, x), IGNORE, np.uint8)
    label[0, 2:5, 2:5] = 1
    label[0, :, 7] = 0
    instances = np.zeros((1, y, x), np.int32)
    instances[0, 2:5, 2:5] = 1
    mask = image[:1] > 0
    slice_sets = np.zeros((1, z), bool)
    slice_sets[0, 1:3] = True
    return image, image.max(axis=1), label, instances, mask, slice_sets


def test_slice_labels_follow_the_nucleus_slices_and_its_3d_mask():
    image, mip, label, instances, mask, slice_sets = hand_made_stack()
    views, labels, slice_instances = SliceViews(margin_slices=1)(image, mip, label, instances, mask, slice_sets)
    assert views.shape == (5, 3, 8, 8) and labels.shape == (5, 1, 8, 8) and slice_instances.shape == (5, 1, 8, 8)
    nucleus = (slice(2, 5), slice(2, 5))
    # slice 1: the whole 3 x 3 nucleus; slice 2: its centre, the rest of it ignored (the tip is smaller)
    assert (labels[1, 0][nucleus] == 1).all() and (slice_instances[1, 0][nucleus] == 1).all()
    assert labels[2, 0, 3, 3] == 1 and (labels[2, 0][nucleus] == 1).sum() == 1
    assert (labels[2, 0][nucleus] == IGNORE).sum() == 8
    # slices 0 and 3 lie next to the slice set (margin 1): ignored; slice 4 is farther: background
    assert (labels[0, 0][nucleus] == IGNORE).all() and (labels[3, 0][nucleus] == IGNORE).all()
    assert (labels[4, 0][nucleus] == 0).all() and (slice_instances[4] == 0).all()
    # the EMIP's background is background on every slice; its ignore region stays ignored
    assert (labels[:, 0, :, 7] == 0).all()
    assert (labels[:, 0, 0, 0] == IGNORE).all()
    # margin 0: slices 0 and 3 are background too
    labels0 = SliceViews(margin_slices=0)(image, mip, label, instances, mask, slice_sets)[1]
    assert (labels0[0, 0][nucleus] == 0).all() and (labels0[3, 0][nucleus] == 0).all()


def test_slice_views_share_the_scale_of_the_stack_projection():
    """Each view is the slice's composite scaled by the MIP's range, as inference scales its slices."""
    image, mip, label, instances, mask, slice_sets = hand_made_stack()
    views = SliceViews()(image, mip, label, instances, mask, slice_sets)[0]
    # R = marker, G = B = nuclei; min-max of the MIP (percentiles 0.5 / 99.8 of a 0/100 image span ~0..100)
    assert views[1, 1, 3, 3] == pytest.approx(1.0, abs=1e-3) and views[1, 0, 3, 3] > 0.9
    assert views[2, 1, 3, 3] == pytest.approx(1.0, abs=1e-3) and views[2, 0, 3, 3] == 0.0
    assert views[0].max() == 0.0


def test_rand_slice_view_draws_slices_with_nuclei_or_keeps_the_emip():
    image, mip, label, instances, mask, slice_sets = hand_made_stack()
    emip = np.zeros((3, 8, 8), np.float32)
    data = SliceViewsd("image", margin_slices=1)({"image": image, "mip": mip, "label": label, "instances": instances,
                                                  "nuclei_mask": mask, "slice_sets": slice_sets, "emip": emip})
    assert "nuclei_mask" not in data
    drawn = set()
    draw = RandSliceViewd(prob=1.0)
    for seed in range(20):
        out = draw.set_random_state(seed)(data)
        assert not {"slice_views", "slice_labels", "slice_instances"} & set(out)
        z = [k for k in range(5) if np.array_equal(out["emip"], data["slice_views"][k])]
        assert z and z[0] in (1, 2) and np.array_equal(out["label"], data["slice_labels"][z[0]])
        drawn.add(z[0])
    assert drawn == {1, 2}  # both slices holding nucleus pixels, never the empty ones
    keep = RandSliceViewd(prob=0.0)(data)
    assert keep["emip"] is emip and keep["label"] is label and "slice_views" not in keep
    with pytest.raises(LECLInputError, match="slice_view_share"):
        RandSliceViewd(prob=1.5)
