import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina.model.anchors import AnchorGenerator


def test_two_by_two_grid_hand_computed():
    # one level, stride 8, size 4 * 8 = 32, one scale, ratios 1 and 4 (h / w)
    gen = AnchorGenerator(levels=(3,), anchor_scale=4, scales_per_octave=1, ratios=(1.0, 4.0))
    (a,) = gen([(2, 2)])
    # ratio 1: 32x32 -> +-16; ratio 4: w = 32 / 2 = 16, h = 32 * 2 = 64 -> +-8, +-32
    cell = torch.tensor([[-16.0, -16, 16, 16], [-8, -32, 8, 32]])
    shifts = torch.tensor([[0.0, 0], [8, 0], [0, 8], [8, 8]])  # (x, y), row-major
    expected = (shifts.repeat(1, 2)[:, None, :] + cell[None]).reshape(-1, 4)
    torch.testing.assert_close(a, expected)


def test_offset_centres_anchors_on_cells():
    gen = AnchorGenerator(levels=(3,), scales_per_octave=1, ratios=(1.0,), offset=0.5)
    (a,) = gen([(1, 2)])
    torch.testing.assert_close(a, torch.tensor([[-12.0, -12, 20, 20], [-4, -12, 28, 20]]))


def test_paper_defaults():
    gen = AnchorGenerator()
    assert gen.num_anchors == 9 and gen.sizes == (32, 64, 128, 256, 512)
    (a, *_) = gen([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    areas = (a[:9, 2] - a[:9, 0]) * (a[:9, 3] - a[:9, 1])
    expected = torch.tensor([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)]).repeat(3) ** 2
    torch.testing.assert_close(areas, expected, rtol=1e-5, atol=1e-3)


def test_equal_to_torchvision_up_to_its_rounding():
    """torchvision rounds each base anchor's corners to integers; we keep exact sizes.

    So corners differ by at most 0.5 px and equal where the exact corner is an integer.
    """
    gen = AnchorGenerator()
    sizes = tuple(tuple(s * sc for sc in gen.scales) for s in gen.sizes)
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    shapes = [(512 // 2**lv, 512 // 2**lv) for lv in range(3, 8)]
    feats = [torch.zeros(1, 1, h, w) for h, w in shapes]
    (theirs,) = tv(ImageList(torch.zeros(1, 3, 512, 512), [(512, 512)]), feats)
    ours = torch.cat(gen(shapes))
    assert ours.shape == theirs.shape == (49104, 4)
    diff = (ours - theirs).abs()
    assert diff.max() <= 0.5 + 1e-4
    torch.testing.assert_close(ours.round(), theirs, atol=1.0, rtol=0)
    exact = ours == ours.round()
    assert exact.any() and (diff[exact] == 0).all()


def test_cached_per_size():
    gen = AnchorGenerator()
    shapes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert gen(shapes)[0] is gen(shapes)[0]
    assert gen([(16, 16), *shapes[1:]])[0].shape[0] == 16 * 16 * 9
