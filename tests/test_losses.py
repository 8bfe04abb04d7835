"""Each LECL loss term on hand-made tensors, the contrast memory, and a loss that goes down on real data."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lecl_transforms.losses import (
    TERMS,
    LECLLoss,
    PixelContrastMemory,
    entropy_on,
    hv_mse,
    hv_msge,
    masked_cross_entropy,
    masked_dice,
)


def test_ignore_pixels_get_no_cross_entropy_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 1, 4, 4)).float()
    ignore = torch.zeros(1, 1, 4, 4)
    ignore[..., :2] = 1
    masked_cross_entropy(logits, target, ignore).backward()
    assert (logits.grad[..., :2] == 0).all()
    assert (logits.grad[..., 2:] != 0).any()
    all_ignored = masked_cross_entropy(logits, target, torch.ones_like(ignore))
    assert all_ignored.item() == 0


def test_cross_entropy_matches_torch_on_labelled_pixels():
    logits = torch.randn(2, 2, 3, 3)
    target = torch.randint(0, 2, (2, 1, 3, 3)).float()
    ignore = (torch.rand(2, 1, 3, 3) > 0.5).float()
    keep = ignore[:, 0] == 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[:, 0][keep].long())
    torch.testing.assert_close(masked_cross_entropy(logits, target, ignore), expected)


@pytest.mark.parametrize("n_classes,term", [(2, "np_dice"), (3, "nc_dice")])
def test_dice_of_a_perfect_prediction_with_ignore_pixels_is_zero(n_classes, term):
    target = torch.randint(0, n_classes, (2, 1, 8, 8)).float()
    logits = 50.0 * F.one_hot(target[:, 0].long(), n_classes).permute(0, 3, 1, 2).float()  # certain and right
    ignore = torch.zeros(2, 1, 8, 8)
    ignore[..., :2] = 1  # 25 % of the pixels unlabelled
    logits[..., :2] = torch.randn(2, n_classes, 8, 2)  # whatever is predicted there must not count
    assert masked_dice(logits, target, 1 - ignore).item() == pytest.approx(0.0, abs=1e-4)
    key = "np" if n_classes == 2 else "nc"
    target_dict = {"np": (target > 0).float(), "nc": target, "hv": torch.zeros(2, 2, 8, 8), "ignore": ignore}
    pred = {"nucleus_prediction": logits if key == "np" else torch.zeros(2, 2, 8, 8),
            "horizontal_vertical": torch.zeros(2, 2, 8, 8),
            "type_prediction": logits if key == "nc" else torch.zeros(2, 3, 8, 8)}
    loss = LECLLoss(weights={t: float(t == term) for t in TERMS})
    assert loss(pred, target_dict).item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_dice_with_ignore_columns_equals_monai_dice_on_the_labelled_columns(n_classes):
    from monai.losses import DiceLoss

    g = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(3, n_classes, 6, 10, generator=g, requires_grad=True)
    target = torch.randint(0, n_classes, (3, 1, 6, 10), generator=g).float()
    ignore = torch.zeros(3, 1, 6, 10)
    ignore[..., 7:] = 1  # three whole columns unlabelled
    ours = masked_dice(logits, target, 1 - ignore)
    reference = DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=1e-3, smooth_dr=1e-3)(
        logits[..., :7], target[..., :7])
    torch.testing.assert_close(ours, reference)
    ours.backward()
    assert (logits.grad[..., 7:] == 0).all()  # ignore pixels get no Dice gradient


def test_entropy_only_on_the_ignore_region():
    logits = torch.zeros(1, 3, 2, 2)  # uniform: entropy log(3)
    logits[0, 0, 1] = 50.0  # confident on row 1: entropy ~0
    region = torch.zeros(1, 1, 2, 2)
    region[0, 0, 0] = 1
    assert entropy_on(logits, region).item() == pytest.approx(math.log(3), rel=1e-5)
    region = torch.zeros(1, 1, 2, 2)
    region[0, 0, 1] = 1
    assert entropy_on(logits, region).item() == pytest.approx(0.0, abs=1e-6)


def test_hv_terms():
    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, 2:6, 2:6] = torch.linspace(-1, 1, 4)
    pred = target.clone()
    nuclei = torch.zeros(1, 1, 8, 8)
    nuclei[..., 2:6, 2:6] = 1
    assert hv_mse(pred, target, torch.ones(1, 1, 8, 8)).item() == 0
    assert hv_msge(pred, target, nuclei).item() == pytest.approx(0.0, abs=1e-8)
    pred[0, :, 0, 0] = 1.0  # an error on an unlabelled pixel is not counted
    labelled = torch.ones(1, 1, 8, 8)
    labelled[..., 0, 0] = 0
    assert hv_mse(pred, target, labelled).item() == 0
    assert hv_mse(pred, target, torch.ones(1, 1, 8, 8)).item() == pytest.approx(2 / 128)
    assert hv_msge(pred * 0, target, nuclei).item() > 0


def _clustered(n=64, dim=8, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1] * (n // 2) + [2] * (n // 2))
    centres = torch.zeros(3, dim)
    centres[1, 0] = 1.0
    centres[2, 1] = 1.0
    emb = F.normalize(centres[labels] + noise * torch.randn(n, dim, generator=g), dim=1)
    return emb, labels


def test_separated_embeddings_have_lower_contrast_loss_than_shuffled():
    memory = PixelContrastMemory(num_classes=3, dim=8, memory_size=100)
    emb, labels = _clustered()
    separated = memory.contrast(emb, labels, emb, labels)
    shuffled = memory.contrast(emb, labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))],
                               emb, labels)
    assert separated < shuffled
    assert separated >= 0


def test_queues_advance_by_the_number_enqueued_and_wrap():
    memory = PixelContrastMemory(num_classes=3, dim=4, memory_size=7, pixels_per_class=3)
    emb = F.normalize(torch.randn(2, 4, 5, 5), dim=1)
    labels = torch.full((2, 5, 5), -1)
    labels[:, :2] = 1  # 10 pixels of class 1 per image, no class 2
    memory.enqueue(emb, labels)
    assert memory.pixel_ptr.tolist() == [0, 6, 0]  # 3 per image x 2 images
    assert memory.segment_ptr.tolist() == [0, 2, 0]  # one class mean per image
    memory.enqueue(emb, labels)
    assert memory.pixel_ptr.tolist() == [0, 12 % 7, 0]  # wrapped
    assert memory.pixel_count.tolist() == [0, 7, 0]  # full, never more than its size
    assert memory.segment_count.tolist() == [0, 4, 0]
    # the class mean written to the segment queue is the normalised mean of that image's class-1 embeddings
    expected = F.normalize(emb[1].flatten(1).T[labels[1].flatten() == 1].mean(0), dim=0)
    torch.testing.assert_close(memory.segment_queue[1, 3], expected)


def test_anchor_sampling_takes_half_hard_half_easy():
    memory = PixelContrastMemory(num_classes=3, dim=4, max_samples=1024, max_views=4)
    emb = F.normalize(torch.randn(1, 4, 4, 4), dim=1)
    labels = torch.ones(1, 4, 4, dtype=torch.long)
    predicted = labels.clone()
    predicted[0, 0] = 2  # 4 hard pixels (labelled 1, predicted 2)
    anchors, anchor_labels = memory.sample_anchors(emb, labels, predicted)
    assert anchors.shape == (4, 4) and (anchor_labels == 1).all()
    flat = emb[0].flatten(1).T
    hard = {tuple(v.tolist()) for v in flat[:4]}
    assert sum(tuple(a.tolist()) in hard for a in anchors) == 2


def test_loss_terms_switches_and_warm_up():
    torch.manual_seed(0)
    pred = {"nucleus_prediction": torch.randn(1, 2, 8, 8), "horizontal_vertical": torch.randn(1, 2, 8, 8),
            "type_prediction": torch.randn(1, 3, 8, 8), "embedding": F.normalize(torch.randn(1, 16, 8, 8), dim=1)}
    nc = torch.randint(1, 3, (1, 1, 8, 8)).float()
    target = {"np": torch.ones(1, 1, 8, 8), "hv": torch.zeros(1, 2, 8, 8), "nc": nc, "ignore": torch.zeros(1, 1, 8, 8)}
    target["ignore"][..., :2, :] = 1
    loss = LECLLoss(weights={"hv_msge": 0}, contrast_start_epoch=3, proj_dim=16, memory_size=50)
    before = loss(pred, target)
    assert "hv_msge" not in loss.last_terms and "scl_pixel" not in loss.last_terms  # off / still warming up
    assert loss.memory.pixel_count.sum() > 0  # the memory fills during the warm-up
    assert loss.last_terms["hovernet"].item() == pytest.approx(before.item(), rel=1e-6)  # no contrast yet
    loss.set_epoch(3)
    total = loss(pred, target)
    assert {"scl_pixel", "scl_region"} <= set(loss.last_terms)
    expected = float(sum(loss.weights[k] * v for k, v in loss.last_terms.items() if k not in ("total", "hovernet")))
    assert total.item() == pytest.approx(expected, rel=1e-5)
    contrast = sum(loss.weights[k] * loss.last_terms[k].item() for k in ("scl_pixel", "scl_region"))
    assert loss.last_terms["hovernet"].item() == pytest.approx(total.item() - contrast, rel=1e-5)
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['np_bce'\]"):
        LECLLoss(weights={"np_bce": 1})
    with pytest.raises(ValueError, match="proj_dim"):
        LECLLoss(contrast_start_epoch=0, proj_dim=8)(pred, target)


def test_loss_goes_down_on_a_tiny_synthetic_set(synth_dir):
    from monai.transforms import Compose, RandSpatialCropd

    from lecl_transforms import ChannelComposited, HoVerNetTargetsd, load_datalist, pseudo_label_transforms
    from lecl_transforms.networks import HoVerNetSCL

    torch.manual_seed(0)
    entry = load_datalist(synth_dir / "datalist.json", "training")[0]
    pipeline = Compose([pseudo_label_transforms(), ChannelComposited("emip"),
                        RandSpatialCropd(["emip", "label", "instances"], roi_size=(64, 64), random_size=False),
                        HoVerNetTargetsd("label")])
    pipeline.set_random_state(0)
    data = [pipeline({"image": entry["image"], "points": entry["points"]}) for _ in range(4)]
    x = torch.stack([torch.as_tensor(np.asarray(d["emip"])) for d in data]).float()
    target = {k: torch.stack([torch.as_tensor(d[f"target_{k}"]) for d in data]) for k in ("np", "hv", "nc", "ignore")}
    net = HoVerNetSCL(width=0.125).train()
    loss_fn = LECLLoss(contrast_start_epoch=0, proj_dim=net.proj_dim, memory_size=200)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    history = []
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn(net(x), target)
        loss.backward()
        opt.step()
        history.append(loss_fn.last_terms)
    first, last = history[0], history[-1]
    for term in ("np_ce", "hv_mse", "nc_ce"):
        assert last[term] < 0.8 * first[term], (term, first[term], last[term])
