"""Per-level anchor boxes for dense detectors.

Layout convention (shared by the head, the matcher and the postprocess): for each
level, positions in row-major order (y outer, x inner), and at each position the A
anchors with aspect ratio outer and scale inner, exactly as torchvision's
``AnchorGenerator`` orders them. Levels are concatenated P3 first.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cell_anchors(size: float, scales: Tensor, ratios: Tensor) -> Tensor:
    """Anchors centred on (0, 0) for one level.

    Args:
        size: base size in pixels (the side of the ratio-1, scale-1 anchor).
        scales: (S,) multipliers of ``size``.
        ratios: (R,) aspect ratios h / w.

    Returns:
        (R * S, 4) boxes x1y1x2y2; each has area (size * scale)^2 and h / w = ratio.
    """
    h_ratios = ratios.sqrt()  # (R,)
    w_ratios = 1.0 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :] * size).reshape(-1)  # (R*S,)
    hs = (h_ratios[:, None] * scales[None, :] * size).reshape(-1)
    return torch.stack([-ws, -hs, ws, hs], dim=1) / 2


def grid_anchors(
    cell: Tensor, stride: int | tuple[int, int], height: int, width: int, offset: float
) -> Tensor:
    """Tile ``cell`` (A, 4) over an (height, width) feature map -> (height*width*A, 4).

    ``stride`` is the step between positions in pixels, one for both axes or (y, x).
    """
    stride_y, stride_x = stride if isinstance(stride, tuple) else (stride, stride)
    xs = (torch.arange(width, dtype=cell.dtype, device=cell.device) + offset) * stride_x
    ys = (torch.arange(height, dtype=cell.dtype, device=cell.device) + offset) * stride_y
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (H, W)
    shifts = torch.stack([x, y, x, y], dim=-1).reshape(-1, 1, 4)  # (HW, 1, 4)
    return (shifts + cell[None]).reshape(-1, 4)  # (HW*A, 4)


class AnchorGenerator(nn.Module):
    """RetinaNet anchors: per level l, base size ``anchor_scale * 2**l``.

    With the defaults (levels 3-7, anchor_scale 4, 3 scales per octave, ratios
    0.5/1/2) this is the paper's set: sizes 32..512, 9 anchors per location.

    Anchors for a given list of feature-map sizes are computed once and cached per
    device and dtype.

    Args:
        levels: pyramid levels; stride of level l is 2**l.
        anchor_scale: base size in units of the stride.
        scales_per_octave: S scales 2**(i / S), i = 0..S-1.
        ratios: aspect ratios h / w.
        offset: anchor centres at (i + offset) * stride; 0.0 is torchvision's and
            detectron2's convention, 0.5 centres anchors on the pixels they cover.
        integer_cells: torchvision's RetinaNet anchors: each side ``size * scale``
            truncated to whole pixels (``int(32 * 2 ** (1 / 3))`` = 40) and the corners
            of the cell rounded, in float32 (``AnchorGenerator.generate_anchors``).
            False: exact sizes.
        strides_from_input: the step between positions of a level is (input side) //
            (map side) per axis, the input side being the first level's map side times
            its stride (torchvision's ``AnchorGenerator``: P7 of a 320 px input steps
            320 // 3 = 106 px, not 128). Exact when the input side is a multiple of the
            first stride. False: 2**level.
    """

    def __init__(
        self,
        levels: tuple[int, ...] = (3, 4, 5, 6, 7),
        anchor_scale: float = 4.0,
        scales_per_octave: int = 3,
        ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        offset: float = 0.0,
        integer_cells: bool = False,
        strides_from_input: bool = False,
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.strides = tuple(2**lv for lv in self.levels)
        self.sizes = tuple(anchor_scale * s for s in self.strides)
        self.scales = tuple(2 ** (i / scales_per_octave) for i in range(scales_per_octave))
        self.ratios = tuple(float(r) for r in ratios)
        self.offset = float(offset)
        self.integer_cells = bool(integer_cells)
        self.strides_from_input = bool(strides_from_input)
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per location, A."""
        return len(self.scales) * len(self.ratios)

    def forward(
        self, feature_sizes: list[tuple[int, int]], device: torch.device | None = None
    ) -> list[Tensor]:
        """Anchors for each level.

        Args:
            feature_sizes: (H_l, W_l) per level, P3 first.

        Returns:
            list of (H_l * W_l * A, 4) float32 boxes x1y1x2y2 in input pixels.
        """
        if len(feature_sizes) != len(self.levels):
            raise ValueError(f"got {len(feature_sizes)} feature maps for levels {self.levels}")
        key = (tuple(map(tuple, feature_sizes)), str(device))
        if key not in self._cache:
            steps = self.steps(feature_sizes)
            self._cache[key] = [
                grid_anchors(self.cell(size), step, h, w, self.offset).float().to(device)
                for (h, w), size, step in zip(feature_sizes, self.sizes, steps)
            ]
        return self._cache[key]

    def cell(self, size: float) -> Tensor:
        """(A, 4) anchors of a level of base size ``size``, centred on (0, 0)."""
        scales = torch.tensor(self.scales, dtype=torch.float64)
        ratios = torch.tensor(self.ratios, dtype=torch.float64)
        if not self.integer_cells:
            return cell_anchors(size, scales, ratios)
        sides = (scales * size).trunc().float()  # (S,) whole pixels, as int(x * 2 ** (i / 3))
        return cell_anchors(1.0, sides, ratios.float()).round()

    def steps(self, feature_sizes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """(y, x) pixels between positions of each level (see ``strides_from_input``)."""
        if not self.strides_from_input:
            return [(s, s) for s in self.strides]
        (h0, w0), first = feature_sizes[0], self.strides[0]
        return [(h0 * first // h, w0 * first // w) for h, w in feature_sizes]

    def extra_repr(self) -> str:
        flags = "".join(f", {k}=True" for k in ("integer_cells", "strides_from_input")
                        if getattr(self, k))
        return f"sizes={self.sizes}, scales={self.scales}, ratios={self.ratios}{flags}"

