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


def test_integer_cells_hand_computed():
    # size 32, scale 2^(1/3): side int(40.32) = 40; ratio 0.5 (h / w): w = 40 / sqrt(0.5) =
    # 56.57, h = 40 * sqrt(0.5) = 28.28 -> corners +-28.28, +-14.14 -> rounded +-28, +-14
    gen = AnchorGenerator(levels=(3,), ratios=(0.5,), integer_cells=True)
    cell = gen.cell(32.0)
    torch.testing.assert_close(cell[1], torch.tensor([-28.0, -14, 28, 14]))
    # scale 2^(2/3): side int(50.80) = 50: w = 70.71, h = 35.36 -> +-35.36, +-17.68 -> 35, 18
    torch.testing.assert_close(cell[2], torch.tensor([-35.0, -18, 35, 18]))
    assert not torch.equal(AnchorGenerator(levels=(3,), ratios=(0.5,)).cell(32.0), cell)


def test_strides_from_input_hand_computed():
    # a 320 x 224 input (W x H): P3 28 x 40 ... P7 2 x 3; P7 steps 224 // 2 = 112, 320 // 3 = 106
    shapes = [(28, 40), (14, 20), (7, 10), (4, 5), (2, 3)]
    gen = AnchorGenerator(strides_from_input=True)
    assert gen.steps(shapes) == [(8, 8), (16, 16), (32, 32), (56, 64), (112, 106)]
    assert AnchorGenerator().steps(shapes) == [(s, s) for s in (8, 16, 32, 64, 128)]
    p7 = gen(shapes)[4].view(2, 3, 9, 4)  # (H, W, A, 4)
    centres = (p7[..., :2] + p7[..., 2:]) / 2  # (H, W, A, 2) x, y
    torch.testing.assert_close(centres[1, 2, 0], torch.tensor([2 * 106.0, 112.0]))


def test_torchvision_retinanet_anchors_exactly():
    """With both options the anchors are torchvision RetinaNet's, also where the input is
    not a multiple of 128 (P6 and P7 then step by input // map size)."""
    from torchvision.models.detection.retinanet import _default_anchorgen

    gen = AnchorGenerator(integer_cells=True, strides_from_input=True)
    for h, w in ((224, 320), (800, 1216), (512, 512)):
        shapes = [(-(-h // 2**lv), -(-w // 2**lv)) for lv in range(3, 8)]  # ceil, as the convs
        feats = [torch.zeros(1, 1, *s) for s in shapes]
        (theirs,) = _default_anchorgen()(ImageList(torch.zeros(1, 3, h, w), [(h, w)]), feats)
        assert torch.equal(torch.cat(gen(shapes)), theirs), (h, w)
