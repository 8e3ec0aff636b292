"""What the networks are built from: ModelConfig, the dense output, backbones, heads, descriptor sampling.

UnsuperPoint (Christiansen et al. 2019, :mod:`usp_core.models.unsuperpoint`) and SuperPoint
(:mod:`usp_core.models.superpoint`) share these; :func:`usp_core.models.build.build_model` makes the
one a config names. Networks return dense maps only, one entry per 8x8 cell; top-k selection and the
mapping to input pixels of a particular image live in :mod:`usp_core.inference.detector`.

Pixel coordinates, everywhere in ``usp_core``, follow OpenCV: ``(x, y) = (column, row)`` and the
centre of the top-left pixel is ``(0, 0)``.

Design choices where the paper is silent:

- Each head is ``conv3x3(C, C) + BatchNorm + LeakyReLU`` followed by a ``conv1x1`` to its output,
  with C the backbone's output width (``widths[-1]``, 256 by default, for the VGG; ``widths[3]`` for
  the fast backbone): the paper's intermediate 256 -> 256 layer per head. The 1x1 output layer
  (rather than a second 3x3) keeps each head's last step local to its cell.
- Position, ``position_head: regression`` (the paper's, weights v1 and v2): ``(cell index + sigmoid
  offset) * 8``, so cell ``j`` can place its point anywhere in ``[8 j, 8 j + 8]``. With pixel centres
  at integers that range is the cell's pixels shifted by half a pixel; the network learns its offsets
  through homography-consistent training, which absorbs that.
- Position, ``position_head: softargmax`` (weights v3, fast backbone): a full-resolution logit map
  from the backbone's 1, 1/2 and 1/4 features (:class:`FineHead`); in each 8x8 cell the pixel with the
  highest logit is found and the point is the soft-argmax of the logits in a ``(2 r + 1)^2`` window
  around it, clipped to the cell (:func:`cell_softargmax`, ALIKE's differentiable keypoint detection
  per cell). Sub-pixel, differentiable, and still one candidate per cell, so point selection, export
  and every backend are unchanged. That is how the network trains (``forward(training=True)``); at
  inference the same peak is refined by a parabola through it and its two neighbours along each
  axis (:func:`cell_peak_parabola`, the classical sub-pixel peak fit): on the shipped weights it
  lowered the localisation error by 0.05-0.07 px (usp-eval, Oxford and HPatches at 240x320) and
  raised the relative-pose AUC@10 at gap 3 by 6 points on tum_fr2 and 1.2 on KITTI (usp-eval-pose),
  since the window's softmax keeps mass on both sides of the peak and so pulls the point towards
  the peak pixel's centre. Training can fit the parabola too (``forward(training=True,
  position_fit="parabola")``; the loss option ``position_fit``): it is differentiable in the five
  logits it reads, so the losses then train the positions that inference returns.
- Precision: positions, descriptor sampling and normalisation are computed in float32 even under
  autocast; in float16 (bfloat16) a coordinate near 500 px would be rounded to 0.5 px (2 px).
- Descriptor sampling: ``grid_sample(..., mode="bilinear", align_corners=False, padding_mode="border")``
  with normalised coordinate ``(x + 0.5) * 2 / W - 1``. With ``align_corners=False`` the centre of
  descriptor cell ``j`` sits at normalised ``(8 j + 4) * 2 / W - 1``, so a point at the centre of the
  cell's pixels, ``x = 8 j + 3.5``, reads exactly that cell's descriptor. ``border`` padding avoids
  blending with zeros for points in the outer half cell.
- Fine descriptors (``fine_descriptor_width`` > 0, weights v4): the same grid also reads the fast
  backbone's 1/2 and 1/4 features at each point, and a small MLP adds them to the 1/8 descriptor
  (:class:`PointDescriptors`): a 1/8 map read bilinearly blurs points a few pixels apart.
- Patch descriptors (``patch_descriptor_width`` > 0): the same two maps read on a 3x3 grid 4 px apart
  around each point (:data:`PATCH_OFFSETS`), through a third small MLP, also added to the descriptor: what
  surrounds the point, not only what lies under it (ALIKED's sparse deformable descriptors read a learned
  set of such positions; here the grid is fixed).
- Fine scores (``fine_score_width`` > 0, weights v5): the same 1/2 and 1/4 features read at each point, through
  another small MLP, add a term to the cell's score logit (:class:`PointScores`): the 1/8 score head
  ranks cells by what a 1/8 map sees, not by what lies under the point it keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelConfig", "DenseOutput", "TrainingMaps", "FastBackbone", "FineHead", "vgg_backbone", "build_backbone",
           "conv_head", "cell_grid", "cell_softargmax", "cell_peak_parabola", "parabola_offset", "check_position_fit",
           "sample_descriptors",
           "PointReads", "PointDescriptors", "PointScores", "PATCH_OFFSETS", "BACKBONE_WIDTHS",
           "ARCHITECTURES", "POSITION_HEADS", "POSITION_FITS", "FAST_BLOCKS", "FINE_UPSAMPLING"]


BACKBONE_WIDTHS = {  # default widths per backbone
    "vgg": (32, 32, 64, 64, 128, 128, 256, 256),
    "fast": (8, 24, 48, 96, 128),
}
ARCHITECTURES = ("unsuperpoint", "superpoint")  # the networks a ModelConfig can describe (see build_model)
POSITION_HEADS = ("regression", "softargmax")  # how UnsuperPoint places a cell's point (see the module docstring)
POSITION_FITS = ("softargmax", "parabola")  # how the softargmax head places points in training (inference: parabola)
FAST_BLOCKS = (1, 2, 2, 2, 2)  # the fast backbone's default conv3x3 blocks per scale
FINE_UPSAMPLING = ("bilinear", "nearest")  # the full-resolution head's 2x steps
PATCH_OFFSETS = tuple((float(dx), float(dy)) for dy in (-4, 0, 4) for dx in (-4, 0, 4))  # px (x, y), patch descriptors


def check_position_fit(position_fit: str) -> None:
    """ValueError (one line) unless ``position_fit`` is one of :data:`POSITION_FITS`."""
    if position_fit not in POSITION_FITS:
        raise ValueError(f"position_fit must be one of {', '.join(POSITION_FITS)}, got {position_fit!r}")


@dataclass
class ModelConfig:
    """Architecture of UnsuperPoint or SuperPoint (``architecture``; networks of usp_core.models)."""

    architecture: str = "unsuperpoint"  # "unsuperpoint" (score/position/descriptor heads) or "superpoint" (65-way points)
    backbone: str = "vgg"  # "vgg": the paper's 8 conv3x3 with 3 max-pools; "fast": one thin conv at full resolution, 1/16 context
    widths: tuple[int, ...] = ()  # vgg: 8 conv3x3 widths (a max-pool after the 2nd, 4th, 6th); fast: 5 widths at 1, 1/2, 1/4, 1/8, 1/16 scale; () = the backbone's default
    descriptor_dim: int = 256  # D, length of each descriptor
    in_channels: int = 1  # grey input; colour is converted by the inference wrapper
    negative_slope: float = 0.01  # LeakyReLU slope in backbone and heads
    position_head: str = "regression"  # "regression": sigmoid offset per 1/8 cell (v1, v2); "softargmax": full-resolution map (v3, fast backbone)
    refine_radius: int = 2  # softargmax: window radius (px) around each cell's peak pixel
    fine_width: int = 8  # softargmax: channels of the full-resolution head
    blocks: tuple[int, ...] = ()  # fast: conv3x3 blocks at 1, 1/2, 1/4, 1/8, 1/16 scale; () = (1, 2, 2, 2, 2)
    fine_upsample: str = "bilinear"  # softargmax: the full-resolution head's 2x steps, "bilinear" (v3) or "nearest"
    fine_descriptor_width: int = 0  # softargmax: hidden width of the MLP that adds the 1/2 and 1/4 features read at each point to its descriptor; 0 = off (v1-v3)
    fine_score_width: int = 0  # softargmax: hidden width of the MLP that adds the 1/2 and 1/4 features read at each point to its score logit; 0 = off (v1-v4)
    patch_descriptor_width: int = 0  # softargmax: hidden width of the MLP that adds the 1/2 and 1/4 features read on a 3x3 grid 4 px apart around each point to its descriptor; 0 = off (v1-v6)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        if self.backbone not in BACKBONE_WIDTHS:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONE_WIDTHS)}, got {self.backbone!r}")
        self.widths = tuple(int(w) for w in self.widths) or BACKBONE_WIDTHS[self.backbone]
        count = len(BACKBONE_WIDTHS[self.backbone])
        if len(self.widths) != count or min(self.widths) < 1:
            raise ValueError(f"the {self.backbone} backbone takes {count} positive widths, got {self.widths}")
        if self.descriptor_dim < 1 or self.in_channels < 1:
            raise ValueError("descriptor_dim and in_channels must be positive")
        if self.position_head not in POSITION_HEADS:
            raise ValueError(f"position_head must be one of {', '.join(POSITION_HEADS)}, got {self.position_head!r}")
        if self.position_head == "softargmax" and self.backbone != "fast":
            raise ValueError("position_head softargmax needs the fast backbone (its full-resolution features)")
        if not 0 <= self.refine_radius <= 7 or self.fine_width < 1:
            raise ValueError(f"refine_radius must be in 0..7 and fine_width positive, got {self.refine_radius}, "
                             f"{self.fine_width}")
        self.blocks = tuple(int(b) for b in self.blocks) or FAST_BLOCKS
        if self.blocks != FAST_BLOCKS and (self.backbone != "fast" or len(self.blocks) != len(FAST_BLOCKS)
                                           or min(self.blocks) < 1):
            raise ValueError(f"blocks sets the fast backbone's 5 depths (each at least 1), got {self.blocks} "
                             f"for backbone {self.backbone}")
        if self.fine_upsample not in FINE_UPSAMPLING:
            raise ValueError(f"fine_upsample must be one of {', '.join(FINE_UPSAMPLING)}, got {self.fine_upsample!r}")
        for name in ("fine_descriptor_width", "fine_score_width", "patch_descriptor_width"):
            width = getattr(self, name)
            if width < 0 or (width and self.position_head != "softargmax"):
                raise ValueError(f"{name} must be 0, or positive with position_head softargmax (the backbone's "
                                 f"1/2 and 1/4 features), got {width} with {self.position_head}")

    @property
    def reads_fine_levels(self) -> bool:
        """Whether points read the fast backbone's 1/2 and 1/4 features (fine or patch descriptors, fine scores)."""
        return bool(self.fine_descriptor_width or self.fine_score_width or self.patch_descriptor_width)

    @property
    def describes_from_fine_levels(self) -> bool:
        """Whether descriptors read the 1/2 and 1/4 features (fine or patch descriptors)."""
        return bool(self.fine_descriptor_width or self.patch_descriptor_width)


class DenseOutput(NamedTuple):
    """Dense per-cell predictions for a batch of images of size (H, W).

    score: (B, 1, H/8, W/8) in (0, 1).
    position: (B, 2, H/8, W/8) float32 absolute pixel (x, y) in the input image, ``(cell + offset) * 8``.
    descriptors: (B, D, H/8, W/8) float32, sampled at ``position`` and L2-normalised over D.
    """

    score: torch.Tensor
    position: torch.Tensor
    descriptors: torch.Tensor


def _conv_block(in_channels: int, out_channels: int, negative_slope: float) -> nn.Sequential:
    """conv3x3 (stride 1, same padding, no bias) + BatchNorm + LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(negative_slope),
    )


def conv_head(channels: int, out_channels: int, negative_slope: float) -> nn.Sequential:
    """Head on the 1/8 map: conv3x3 block then a 1x1 conv to ``out_channels`` (with bias)."""
    return nn.Sequential(
        _conv_block(channels, channels, negative_slope),
        nn.Conv2d(channels, out_channels, kernel_size=1),
    )


def vgg_backbone(config: ModelConfig) -> tuple[nn.Module, int]:
    """The paper's backbone: 4 pairs of conv3x3 blocks, a 2x2 max-pool after the first three pairs.

    Returns the module, (B, C, H, W) -> (B, widths[-1], H/8, W/8), and its output width.
    """
    layers: list[nn.Module] = []
    channels = config.in_channels
    for index, width in enumerate(config.widths):
        layers.append(_conv_block(channels, width, config.negative_slope))
        channels = width
        if index in (1, 3, 5):
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers), channels


class FastBackbone(nn.Module):
    """A backbone cheap on a CPU (the XFeat/ALIKE pattern): thin at full resolution, depth at 1/8.

    widths (w1, w2, w4, w8, w16): one conv3x3 block at full resolution, then per scale 1/2, 1/4, 1/8
    and 1/16 a 2x2 max-pool and conv3x3 blocks (``config.blocks`` per scale: by default one at full
    resolution and two at each smaller scale). Max-pools, as in the paper's VGG, keep each 1/8
    cell centred on its 8x8 pixels (stride-2 convolutions centre it on its top-left pixel, and
    positions did not learn). The 1/16 map (context: a wider receptive field) is projected to w8 by
    a 1x1 conv, upsampled bilinearly and added to the 1/8 map for the DESCRIPTOR head only: added to
    the map of the score and position heads, the upsampling's cell-parity pattern let the network
    satisfy L_uni_xy with offsets that ignore the image, and positions stopped improving.
    Input (B, C, H, W), H and W multiples of 8 -> (detection (B, w8, H/8, W/8), description (B, w8, H/8, W/8)).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        slope, widths = config.negative_slope, config.widths
        inputs = (config.in_channels, *widths[:-1])
        stages = [_stage(low, high, depth, slope, pooled=index > 0)
                  for index, (low, high, depth) in enumerate(zip(inputs, widths, config.blocks))]
        self.to_eighth = nn.Sequential(*stages[:4])
        self.to_sixteenth = stages[4]
        self.context = nn.Conv2d(widths[4], widths[3], kernel_size=1)
        self.out_channels = widths[3]

    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, C, H, W) -> features at 1, 1/2, 1/4 and 1/8 scale: (B, w1, H, W) ... (B, w8, H/8, W/8)."""
        levels = []
        features = images
        for stage in self.to_eighth:
            features = stage(features)
            levels.append(features)
        return levels

    def describe(self, eighth: torch.Tensor) -> torch.Tensor:
        """The 1/8 map (B, w8, H/8, W/8) plus the upsampled 1/16 context: the descriptor head's input."""
        context = self.context(self.to_sixteenth(eighth))
        return eighth + F.interpolate(context, size=eighth.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, C, H, W) -> (detection features, description features), each (B, w8, H/8, W/8)."""
        eighth = self.to_eighth(images)
        return eighth, self.describe(eighth)


def _stage(in_channels: int, out_channels: int, depth: int, negative_slope: float, pooled: bool) -> nn.Module:
    """One scale of the fast backbone: [2x2 max-pool,] ``depth`` conv3x3 blocks; a lone block is returned bare,
    so the state-dict keys of the default network stay those of weights v1-v3."""
    layers = [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)] if pooled else []
    layers += [_conv_block(in_channels, out_channels, negative_slope)]
    layers += [_conv_block(out_channels, out_channels, negative_slope) for _ in range(depth - 1)]
    return nn.Sequential(*layers) if len(layers) > 1 else layers[0]


class FineHead(nn.Module):
    """Full-resolution keypoint logits from the 1, 1/2 and 1/4 features of the fast backbone.

    Each level is projected to ``width`` channels by a 1x1 conv and merged coarse to fine (the sum
    so far upsampled 2x, bilinearly or by repeating pixels as ``upsample`` says, plus the next level's
    projection: a feature-pyramid merge), then LeakyReLU and a 3x3 conv to one logit per pixel. Cheap in
    arithmetic: at 480x640 about 0.1 GFLOP, a few per cent of the backbone.
    Input: levels (B, w1, H, W), (B, w2, H/2, W/2), (B, w4, H/4, W/4) -> logits (B, 1, H, W).
    """

    def __init__(self, widths: tuple[int, int, int], width: int, negative_slope: float,
                 upsample: str = "bilinear") -> None:
        super().__init__()
        self.upsample = upsample
        self.lateral = nn.ModuleList(nn.Conv2d(w, width, kernel_size=1) for w in widths)
        self.activation = nn.LeakyReLU(negative_slope)
        self.out = nn.Conv2d(width, 1, kernel_size=3, padding=1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """levels: the backbone's [1, 1/2, 1/4] features -> logits (B, 1, H, W)."""
        merged = self.lateral[-1](levels[-1])
        for lateral, level in zip(self.lateral[-2::-1], levels[-2::-1]):  # coarse to fine, one 2x step at a time
            merged = lateral(level) + self._upsampled(merged, level)
        return self.out(self.activation(merged))

    def _upsampled(self, merged: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """merged (B, width, h, w) brought to the size of level (B, _, 2h, 2w)."""
        if self.upsample == "nearest":  # v3 at 480x640, OpenVINO bf16, 2-core CPU: 2.7 of 19.4 ms less
            return F.interpolate(merged, size=level.shape[-2:], mode="nearest")
        return F.interpolate(merged, size=level.shape[-2:], mode="bilinear", align_corners=False)


def cell_softargmax(logits: torch.Tensor, radius: int, cell: int = 8) -> torch.Tensor:
    """Per cell, the soft-argmax of full-resolution logits in a window around the cell's best pixel.

    logits (B, 1, H, W), H and W multiples of ``cell`` -> positions (B, 2, H/cell, W/cell), float32
    pixel (x, y) of the input image. The window is the pixels of the cell within ``radius`` (px, per
    axis) of the cell's arg-max pixel; the softmax of their logits weights their coordinates. The
    arg-max picks the window and is not differentiated; the weights are. Export-friendly: no
    data-dependent shapes (pixel_unshuffle, argmax, where, softmax).
    """
    blocks = F.pixel_unshuffle(logits.float(), cell)  # (B, cell^2, h, w), channel = dy * cell + dx
    index = torch.arange(cell * cell, device=logits.device)
    dx = (index % cell).to(torch.float32).view(1, -1, 1, 1)
    dy = torch.div(index, cell, rounding_mode="floor").to(torch.float32).view(1, -1, 1, 1)
    peak = blocks.argmax(dim=1, keepdim=True)
    peak_x = (peak % cell).to(torch.float32)
    peak_y = torch.div(peak, cell, rounding_mode="floor").to(torch.float32)
    window = ((dx - peak_x).abs() <= radius) & ((dy - peak_y).abs() <= radius)
    weights = torch.softmax(blocks.masked_fill(~window, float("-inf")), dim=1)
    offset = torch.cat([(weights * dx).sum(1, keepdim=True), (weights * dy).sum(1, keepdim=True)], dim=1)
    grid = cell_grid(offset.shape[-2], offset.shape[-1], offset.device, offset.dtype)
    return grid * cell + offset


def cell_peak_parabola(logits: torch.Tensor, cell: int = 8, peak: torch.Tensor | None = None) -> torch.Tensor:
    """Per cell, the arg-max pixel of full-resolution logits, refined by a parabola along each axis.

    logits (B, 1, H, W), H and W multiples of ``cell`` -> positions (B, 2, H/cell, W/cell), float32
    pixel (x, y) of the input image. ``peak`` (B, 1, H/cell, W/cell) int64, index ``cell dy + dx`` in the
    cell, names the pixel to refine (None: the cell's arg-max). Along x, a parabola through the logits
    left of, at and right of that pixel puts the peak at ``(l - r) / (2 (l - 2 c + r))`` px from it, clamped to
    half a pixel (likewise along y); a pixel that is no local maximum along an axis (a neighbour in the
    next cell is higher) moves half a pixel towards it. Beyond the image edge the logits are mirrored,
    so an edge pixel does not move across the edge. Export-friendly: no data-dependent shapes.
    """
    logits = logits.float()
    if peak is None:
        peak = F.pixel_unshuffle(logits, cell).argmax(dim=1, keepdim=True)  # (B, 1, h, w), index dy * cell + dx
    grid = cell_grid(peak.shape[-2], peak.shape[-1], logits.device, torch.int64)  # (1, 2, h, w) cell (column, row)
    padded_width = (grid[:, :1].amax(dim=(2, 3), keepdim=True) + 1) * cell + 2  # a tensor: traced graphs serve any size
    x = grid[:, :1] * cell + peak % cell + 1  # (B, 1, h, w) the peak pixel in the padded map
    y = grid[:, 1:] * cell + torch.div(peak, cell, rounding_mode="floor") + 1
    flat = F.pad(logits, (1, 1, 1, 1), mode="reflect").flatten(1)  # (B, (H + 2) (W + 2))

    def at(dx: int, dy: int) -> torch.Tensor:
        """The logits (B, 1, h, w) at each cell's peak pixel moved by (dx, dy)."""
        return flat.gather(1, ((y + dy) * padded_width + x + dx).flatten(1)).view(peak.shape)

    centre = at(0, 0)
    offset_x, offset_y = parabola_offset(at(-1, 0), centre, at(1, 0)), parabola_offset(at(0, -1), centre, at(0, 1))
    return torch.cat([x - 1 + offset_x, y - 1 + offset_y], dim=1).to(torch.float32)


def parabola_offset(before: torch.Tensor, centre: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Where a parabola through three logits one pixel apart peaks, in px from the middle one, in [-0.5, 0.5].

    before, centre, after: logits of any one shape, at -1, 0 and +1 px along an axis -> offsets of that
    shape: ``(before - after) / (2 (before - 2 centre + after))``. A middle logit that is no local maximum
    moves half a pixel towards the higher neighbour. Differentiable in the three logits (training's
    ``position_fit: parabola``) except where clamped.
    """
    curvature = (before - 2.0 * centre + after).clamp(max=-1e-6)
    return ((before - after) / (2.0 * curvature)).clamp(-0.5, 0.5)


class TrainingMaps(NamedTuple):
    """What training needs beyond :class:`DenseOutput` (``UnsuperPoint.forward(images, training=True)``).

    dense: the DenseOutput inference sees.
    score_logit: (B, 1, H/8, W/8) the logit whose sigmoid is ``dense.score``.
    fine: (B, 1, H, W) full-resolution position logits (softargmax head), or None (regression head).
    descriptor_sources: what :class:`PointDescriptors` reads descriptors from at any point: the raw
    descriptor map (B, D, H/8, W/8), before sampling and normalisation, then (fine descriptors only) the
    backbone's (B, w2, H/2, W/2) and (B, w4, H/4, W/4) features.
    """

    dense: DenseOutput
    score_logit: torch.Tensor
    fine: torch.Tensor | None
    descriptor_sources: tuple[torch.Tensor, ...]


def build_backbone(config: ModelConfig) -> tuple[nn.Module, int]:
    """The backbone ``config.backbone`` names (vgg or fast) and its output width at 1/8."""
    if config.backbone == "fast":
        backbone = FastBackbone(config)
        return backbone, backbone.out_channels
    return vgg_backbone(config)


def cell_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell indices (x, y) of a (height, width) map: (1, 2, height, width)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y)).unsqueeze(0)


def sample_descriptors(descriptor_map: torch.Tensor, position: torch.Tensor, cell: int) -> torch.Tensor:
    """Bilinearly sample a (B, D, h, w) map at pixel positions (B, 2, h', w') of a (cell h, cell w) image.

    Returns (B, D, h', w') L2-normalised over D. See the module docstring for the coordinate
    convention.
    """
    return F.normalize(_read(descriptor_map, _sampling_grid(descriptor_map, position, cell)), p=2.0, dim=1)


def _sampling_grid(feature_map: torch.Tensor, position: torch.Tensor, stride: int) -> torch.Tensor:
    """grid_sample's normalised grid (B, h', w', 2) for pixel positions (B, 2, h', w') of the image that a
    (B, C, h, w) map of ``stride`` covers. The same grid reads every map of that image whatever its stride
    (align_corners=False). The image size is computed with tensor ops (not Python ints) so that traced and
    ONNX graphs stay valid for every input size.
    """
    map_grid = cell_grid(feature_map.shape[-2], feature_map.shape[-1], position.device, position.dtype)
    size = (map_grid.amax(dim=(2, 3)) + 1.0) * stride
    return ((position.permute(0, 2, 3, 1) + 0.5) * 2.0 / size - 1.0).float()


def _read(feature_map: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) map read bilinearly at a normalised grid (B, h', w', 2) -> (B, C, h', w') float32."""
    return F.grid_sample(feature_map.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def _point_mlp(in_width: int, width: int, out_width: int, negative_slope: float) -> nn.Sequential:
    """1x1 conv to ``width``, LeakyReLU, 1x1 conv to ``out_width``; the last conv starts at zero, so a network
    fine-tuned from weights without it starts where they were."""
    mlp = nn.Sequential(nn.Conv2d(in_width, width, kernel_size=1), nn.LeakyReLU(negative_slope),
                        nn.Conv2d(width, out_width, kernel_size=1))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


def _read_fine_levels(levels: tuple[torch.Tensor, ...] | list[torch.Tensor], grid: torch.Tensor) -> torch.Tensor:
    """The backbone's fine maps (B, w_i, H/s_i, W/s_i) read at a grid (B, h', w', 2), concatenated:
    (B, sum w_i, h', w') float32."""
    return torch.cat([_read(level, grid) for level in levels], dim=1)


class PointReads(NamedTuple):
    """What :meth:`PointDescriptors.read` reads at points (B, 2, h', w'); the fine parts are None when unused.

    coarse: (B, D, h', w') the 1/8 descriptor map; fine: (B, C, h', w') the 1/2 and 1/4 features under each
    point (C = w2 + w4); patch: (B, 9 C, h', w') the same features at the :data:`PATCH_OFFSETS` around it.
    """

    coarse: torch.Tensor
    fine: torch.Tensor | None
    patch: torch.Tensor | None


def _read_patch(levels: tuple[torch.Tensor, ...] | list[torch.Tensor], raw: torch.Tensor,
                position: torch.Tensor) -> torch.Tensor:
    """The fine levels read at the :data:`PATCH_OFFSETS` around pixel positions (B, 2, h', w') -> (B, 9 C, h', w'),
    channel ``c * 9 + k`` = level channel c at offset k. One read of every level for all nine offsets."""
    shifted = torch.cat([position + position.new_tensor(offset).view(1, 2, 1, 1) for offset in PATCH_OFFSETS], dim=2)
    reads = _read_fine_levels(levels, _sampling_grid(raw, shifted, 8))  # (B, C, 9 h', w'), offset-major rows
    return reads.unflatten(2, (len(PATCH_OFFSETS), -1)).flatten(1, 2)


class PointDescriptors(nn.Module):
    """Unit descriptors at points: the 1/8 descriptor map read bilinearly, plus fine detail and patch context.

    Fine detail (``width`` > 0): the backbone's 1/2 and 1/4 features read at the same points, concatenated,
    through a 1x1 conv to ``width`` channels, LeakyReLU and a 1x1 conv to D, added to the 1/8 descriptor
    before normalising. A 1/8 map read bilinearly blurs points a few pixels apart; these features are what
    sit under the point itself. Patch context (``patch_width`` > 0): the same features read at the nine
    :data:`PATCH_OFFSETS` around the point, through a second such MLP, added too. Each MLP's last conv starts
    at zero, so a network fine-tuned from weights without it starts where they were. Reading first and
    projecting after costs a few MFLOP per image (one MLP per cell, not per pixel).
    sources: (raw (B, D, H/8, W/8)[, half (B, w2, H/2, W/2), quarter (B, w4, H/4, W/4)]); position
    (B, 2, h', w') pixels of the (H, W) image -> (B, D, h', w') float32, L2-normalised over D.
    """

    def __init__(self, fine_widths: tuple[int, ...], width: int, dim: int, negative_slope: float,
                 patch_width: int = 0) -> None:
        super().__init__()
        self.fine = _point_mlp(sum(fine_widths), width, dim, negative_slope) if width else None
        self.patch = (_point_mlp(len(PATCH_OFFSETS) * sum(fine_widths), patch_width, dim, negative_slope)
                      if patch_width else None)

    def forward(self, sources: tuple[torch.Tensor, ...], position: torch.Tensor) -> torch.Tensor:
        """sources, position as in the class docstring -> (B, D, h', w') unit descriptors."""
        return self.combine(self.read(sources, position))

    def read(self, sources: tuple[torch.Tensor, ...], position: torch.Tensor) -> PointReads:
        """sources, position as in the class docstring -> :class:`PointReads` (fine parts None without levels;
        the patch None without the patch MLP)."""
        raw, *levels = sources
        grid = _sampling_grid(raw, position, 8)
        fine = _read_fine_levels(levels, grid) if levels else None
        patch = _read_patch(levels, raw, position) if levels and self.patch is not None else None
        return PointReads(_read(raw, grid), fine, patch)

    def combine(self, reads: PointReads) -> torch.Tensor:
        """What :meth:`read` returns -> (B, D, h', w') unit descriptors (reads without an MLP unused)."""
        descriptors = reads.coarse
        if self.fine is not None:
            descriptors = descriptors + self.fine(reads.fine)
        if self.patch is not None:
            descriptors = descriptors + self.patch(reads.patch)
        return F.normalize(descriptors, p=2.0, dim=1)


class PointScores(nn.Module):
    """A term of each cell's score logit from what lies under its point: the backbone's 1/2 and 1/4 features
    read there (:func:`_read_fine_levels`, (B, sum fine_widths, h', w')), through a 1x1 conv to ``width``,
    LeakyReLU and a 1x1 conv to one channel that starts at zero -> (B, 1, h', w') float32.
    """

    def __init__(self, fine_widths: tuple[int, ...], width: int, negative_slope: float) -> None:
        super().__init__()
        self.mlp = _point_mlp(sum(fine_widths), width, 1, negative_slope)

    def forward(self, fine: torch.Tensor) -> torch.Tensor:
        """fine (B, C, h', w') -> (B, 1, h', w') logit term."""
        return self.mlp(fine)
