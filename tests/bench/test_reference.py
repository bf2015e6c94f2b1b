"""retina.bench.reference: the fair torchvision contender places exactly our anchors."""

import pytest
import torch
from hydra.utils import instantiate
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina.bench.reference import OurAnchors, matching_anchors, torchvision_mobilenet_retinanet
from retina.model.anchors import AnchorGenerator
from retina.training.config import compose_run

# feature-map sides of P3-P7 as the MobileNetV2-FPN makes them: ceil(side / 2**level)
INPUTS = {(448, 448): [(56, 56), (28, 28), (14, 14), (7, 7), (4, 4)],
          # scale jitter: 544 x 416 (P7 steps 544 // 5 = 108 px in torchvision's own generator)
          (544, 416): [(68, 52), (34, 26), (17, 13), (9, 7), (5, 4)]}


def torchvision_anchors(generator, image_hw, shapes):
    images = ImageList(torch.zeros(2, 3, *image_hw), [image_hw, image_hw])
    per_image = generator(images, [torch.zeros(2, 8, h, w) for h, w in shapes])
    assert len(per_image) == 2 and torch.equal(per_image[0], per_image[1])
    return per_image[0]


@pytest.fixture(scope="module")
def neon_anchors(tmp_path_factory) -> AnchorGenerator:
    """Our RetinaNet's anchors in the neon_retinanet experiment, from the real configs."""
    cfg = compose_run(["experiment=neon_retinanet"], tmp_path_factory.mktemp("cfg"))
    return instantiate(cfg.model.detector.anchors)


@pytest.mark.parametrize("image_hw", list(INPUTS))
def test_fair_anchors_equal_ours_box_for_box(neon_anchors, image_hw):
    shapes = INPUTS[image_hw]
    assert neon_anchors.offset == 0.5 and neon_anchors.sizes[0] == 16  # what makes it a test
    ours = neon_anchors(shapes)
    theirs = torchvision_anchors(matching_anchors(neon_anchors), image_hw, shapes)
    assert theirs.shape == (sum(h * w * 3 for h, w in shapes), 4)
    torch.testing.assert_close(theirs, torch.cat(ours), rtol=0, atol=1e-4)
    # and level by level: the first box of each level is our first box of that level
    start = 0
    for level, (h, w) in zip(ours, shapes):
        torch.testing.assert_close(theirs[start:start + h * w * 3], level, rtol=0, atol=1e-4)
        start += h * w * 3


def test_several_ratios_and_scales_keep_our_order():
    # the paper's 9 anchors (ratio outer, scale inner), centred on cells
    gen = AnchorGenerator(offset=0.5)
    shapes = INPUTS[(544, 416)]
    theirs = torchvision_anchors(matching_anchors(gen), (544, 416), shapes)
    torch.testing.assert_close(theirs, torch.cat(gen(shapes)), rtol=0, atol=1e-4)


def test_torchvision_own_generator_with_the_same_sizes_differs(neon_anchors):
    # what the subclass fixes: torchvision centres on cell corners, rounds sizes, steps 448 // 4
    shapes = INPUTS[(448, 448)]
    sizes = tuple(tuple(s * k for k in neon_anchors.scales) for s in neon_anchors.sizes)
    plain = torchvision_anchors(TVAnchorGenerator(sizes, ((1.0,),) * 5), (448, 448), shapes)
    ours = torch.cat(neon_anchors(shapes))
    assert plain.shape == ours.shape
    # first P3 anchor: ours centred at (4, 4), side 16 -> (-4, -4, 12, 12); theirs at (0, 0)
    torch.testing.assert_close(ours[0], torch.tensor([-4.0, -4, 12, 12]))
    torch.testing.assert_close(plain[0], torch.tensor([-8.0, -8, 8, 8]))
    assert not torch.allclose(plain, ours, atol=1.0)


def test_hand_computed_cell_and_offset():
    # one level, stride 8, sides 16 and 16 * 2 ** 0.5 = 22.63, ratio 4 (h / w) -> w = side / 2
    gen = OurAnchors(((16.0, 16 * 2**0.5),), ((1.0, 4.0),), strides=(8,), offset=0.5)
    a = torchvision_anchors(gen, (8, 16), [(1, 2)])
    half = 16 * 2**0.5 / 2
    cell = torch.tensor([[-8, -8, 8, 8], [-half, -half, half, half],
                         [-4, -16, 4, 16], [-half / 2, -2 * half, half / 2, 2 * half]])
    centres = torch.tensor([[4.0, 4, 4, 4], [12, 4, 12, 4]])  # (0 + 0.5) * 8, (1 + 0.5) * 8
    expected = (centres[:, None] + cell[None]).reshape(-1, 4)
    torch.testing.assert_close(a, expected.float())


def test_torchvision_placement_flags_are_refused():
    with pytest.raises(ValueError, match="integer_cells"):
        matching_anchors(AnchorGenerator(integer_cells=True))


def test_model_takes_the_anchors_and_postprocess():
    ours = AnchorGenerator(anchor_scale=2.0, ratios=(1.0,), offset=0.5)
    anchors = matching_anchors(ours)
    # scores start at the prior 0.01: a threshold of 0.005 keeps every candidate
    model = torchvision_mobilenet_retinanet(1, 128, weights=None, anchor_generator=anchors,
                                            score_thresh=0.005, detections_per_img=50)
    assert model.anchor_generator is anchors
    assert model.head.classification_head.num_anchors == 3
    assert (model.score_thresh, model.detections_per_img) == (0.005, 50)
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        reg = model.head.regression_head.bbox_reg  # box outputs 0: each box is its anchor
        reg.weight.zero_(), reg.bias.zero_()
        (det,) = model([torch.rand(3, 128, 96)])
    scores = det["scores"]
    assert len(scores) == 50 and (scores > 0.005).all() and (scores[:-1] >= scores[1:]).all()
    # every box is one of our anchors, clipped to the 96 x 128 image (P3-P7 of 128 x 96:
    # 16 x 12, 8 x 6, 4 x 3, 2 x 2, 1 x 1)
    clipped = torch.cat(ours([(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]))
    clipped[:, 0::2] = clipped[:, 0::2].clamp(0, 96)
    clipped[:, 1::2] = clipped[:, 1::2].clamp(0, 128)
    nearest = (det["boxes"][:, None] - clipped[None]).abs().amax(dim=2).min(dim=1).values
    assert (nearest < 1e-4).all(), nearest.max()
    default = torchvision_mobilenet_retinanet(1, 128, weights=None)
    assert default.head.classification_head.num_anchors == 9 and default.score_thresh == 0.05
