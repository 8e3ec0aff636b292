"""Synthetic Shapes (SuperPoint, DeTone et al. 2018): grey renders of simple shapes with unambiguous corners.

:func:`render_shapes` turns a seed into one image and its ground-truth interest points, the training
data of MagicPoint. Each image shows one primitive, chosen uniformly from ``ShapesConfig.primitives``,
on a smooth random background (blurred noise and blobs within a narrow grey range):

- ``lines``: 1-5 segments 1.5-3 px thick (round caps); points = their endpoints (the segment ends,
  centres of the caps). Segments never cross nor come within 6 % of min(H, W) of each other, so
  there are no intersections to label.
- ``polygon``: one convex polygon of 3-8 vertices; points = its vertices.
- ``multiple_polygons``: 2-5 disjoint convex polygons of 3-6 vertices; points = their vertices.
- ``ellipses``: 1-5 disjoint filled ellipses; no points.
- ``star``: 3-5 rays 1.2-2 px thick from a centre; points = the centre and the ray tips.
- ``checkerboard``: a perspective-warped board of 2-6 x 2-6 cells, possibly larger than the image;
  points = every grid point inside the image (inner X-junctions, border T-junctions, outer corners).
- ``stripes``: a perspective-warped band of 3-9 stripes of random widths, often larger than the
  image; points = the stripe corners inside the image.
- ``cube``: an orthographic view of a random box with three visible faces of different grey;
  points = its 7 visible vertices (the 6 silhouette corners and the front Y-junction).
- ``gaussian_noise``: uniform per-pixel noise (then blurred); no points.

Every polygon, cube face and board cell has interior angles in [40, 160] degrees and edges of at
least 6 % of the smaller image side, so each labelled corner is sharp, visible and distinct. Every
shape contrasts by at least ``min_contrast`` grey levels with every background level, and touching
regions (board cells, cube faces) with each other. Shapes never cover one another's points: lines
keep apart, polygons and ellipses are disjoint, cells and faces tile, so no point is dropped for
being covered; points of the boards outside the image are dropped. All shapes but the boards keep
their points ``margin`` pixels inside the image.

Pixel convention (OpenCV, as usp_core.geometry.homography): ``(x, y) = (column, row)``, the centre of the
top-left pixel at ``(0, 0)``. Shapes are drawn without antialiasing at ``supersampling`` times the
resolution, at ``(x + 0.5) s - 0.5``, with 4 fractional bits, then area-averaged down
(``cv2.INTER_AREA``). Against a 32x supersampled render, pixel coverages differ by 0.1 px of edge
shift on average and 0.6 px at worst (junction pixels); OpenCV's fill takes every boundary pixel,
so drawing at native size would put edges 0.5 px (``LINE_8``) or 0.7 px (``LINE_AA``) outwards and
a 40 deg corner 2 px out. A point thus sits where its corner appears, within 1 px.

Deterministic: all randomness comes from ``np.random.default_rng(seed)``; the same (seed, config)
gives bit-identical images and points.

Speed, 120x160, default config, OpenCV on one thread, on the project's 2-core CPU while a training
job shared it (load 3.5): 1.6 ms per image for the default mix, 2.3 ms for the slowest primitive
(checkerboard), 0.5 ms for gaussian_noise; on the idle machine a near-final revision took 1.5 ms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["PRIMITIVES", "ShapesConfig", "render_shapes"]

PRIMITIVES = ("lines", "polygon", "multiple_polygons", "ellipses", "star", "checkerboard", "stripes", "cube",
              "gaussian_noise")

_SHIFT = 4  # fractional bits of OpenCV's fixed-point drawing coordinates
_MIN_ANGLE_DEG = 40.0  # sharpest corner of a polygon, cube face or board cell (sharper ones blur into a point)
_MAX_ANGLE_DEG = 160.0  # flattest corner (flatter ones are not visible as corners)
_MIN_EDGE = 0.06  # shortest edge of a polygon, face or cell, and narrowest stripe, times min(H, W)
_MAX_TRIES = 200  # random draws of one shape before giving up (the image is then too small for it)
_PLACEMENT_TRIES = 20  # random draws per wanted line or disc before settling for fewer


@dataclass
class ShapesConfig:
    """Settings of :func:`render_shapes`; lengths in output pixels, grey levels in 0..255."""

    image_size: tuple[int, int] = (120, 160)  # (H, W) of the rendered image
    primitives: tuple[str, ...] = PRIMITIVES  # which kinds to draw, one drawn per image, chosen uniformly
    supersampling: int = 4  # shapes are drawn at this many times the resolution, then area-averaged
    margin: float = 4.0  # distance from the image border of every point, except the boards' (clipped)
    min_contrast: int = 30  # grey levels between a shape and any background level, and between touching faces
    background_range: int = 40  # largest peak-to-peak grey variation of the smooth background
    blur_sigma: float = 0.7  # standard deviation of the final Gaussian blur, pixels (0: none)
    noise_std: float = 2.0  # standard deviation of the additive Gaussian pixel noise, grey levels (0: none)

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.primitives = tuple(self.primitives)
        unknown = sorted(set(self.primitives) - set(PRIMITIVES))
        if not self.primitives or unknown:
            raise ValueError(f"primitives must be a non-empty subset of {PRIMITIVES}, got {self.primitives}")
        if min(self.image_size) < 32:
            raise ValueError(f"image_size must be at least 32 x 32, got {self.image_size}")
        # The largest shape, a disc of radius 0.4 min(H, W), must fit inside the margin.
        if self.supersampling < 1 or not 0.0 <= self.margin <= 0.1 * min(self.image_size) - 0.5:
            raise ValueError(f"need supersampling >= 1 and 0 <= margin <= 0.1 min(H, W) - 0.5, got "
                             f"{self.supersampling}, {self.margin}")
        # A cube face or board cell avoids the background and two neighbours: 3 bands of excluded levels.
        if self.min_contrast < 0 or self.background_range < 0 or \
                self.background_range + 6 * self.min_contrast + 3 > 255:
            raise ValueError(f"need min_contrast, background_range >= 0 and background_range + 6 min_contrast "
                             f"<= 252, got {self.min_contrast}, {self.background_range}")
        if self.blur_sigma < 0.0 or self.noise_std < 0.0:
            raise ValueError(f"blur_sigma and noise_std must be >= 0, got {self.blur_sigma}, {self.noise_std}")


def render_shapes(seed: int, config: ShapesConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (image (H, W) uint8, points (N, 2) float32 pixel (x, y)); a pure function of (seed, config)."""
    config = config if config is not None else ShapesConfig()
    rng = np.random.default_rng(seed)
    kind = config.primitives[int(rng.integers(len(config.primitives)))]
    if kind == "gaussian_noise":
        image, points = rng.integers(0, 256, config.image_size).astype(np.float32), np.zeros((0, 2))
    else:
        canvas = _Canvas(rng, config)
        points = _DRAW[kind](canvas, rng)
        image = canvas.downscaled()
    height, width = config.image_size
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    return _finish(image, rng, config), points[inside].astype(np.float32)


class _Canvas:
    """The image being drawn, held at ``supersampling`` times the output size; takes output pixel (x, y)."""

    def __init__(self, rng: np.random.Generator, config: ShapesConfig) -> None:
        self.height, self.width = config.image_size
        self.side = min(config.image_size)  # the unit of shape sizes
        self.scale, self.margin, self.contrast = config.supersampling, config.margin, config.min_contrast
        small, self.background = _background(rng, config)
        self.image = cv2.resize(small, (self.width * self.scale, self.height * self.scale),
                                interpolation=cv2.INTER_LINEAR)

    def level(self, rng: np.random.Generator, *neighbours: int) -> int:
        """A random grey level at least ``contrast`` from the background range and from each neighbour level."""
        levels = np.arange(256)
        allowed = (levels <= self.background[0] - self.contrast) | (levels >= self.background[1] + self.contrast)
        for neighbour in neighbours:
            allowed &= np.abs(levels - neighbour) >= self.contrast
        return int(rng.choice(levels[allowed]))

    def centre(self, rng: np.random.Generator, radius: float) -> np.ndarray:
        """(2,) random point whose disc of ``radius`` lies ``margin`` inside the image."""
        low = self.margin + radius
        return rng.uniform((low, low), (self.width - 1 - low, self.height - 1 - low))

    def fill(self, polygon: np.ndarray, level: int) -> None:
        """Fill the polygon (N, 2) with a grey level."""
        cv2.fillPoly(self.image, [self._fixed(polygon)], level, cv2.LINE_8, _SHIFT)

    def line(self, start: np.ndarray, end: np.ndarray, level: int, thickness: float) -> None:
        """Draw a segment between two (2,) points, ``thickness`` pixels wide, with round caps."""
        ends = self._fixed(np.stack([start, end]))
        width = max(1, round(thickness * self.scale))
        cv2.line(self.image, tuple(ends[0].tolist()), tuple(ends[1].tolist()), level, width, cv2.LINE_8, _SHIFT)

    def ellipse(self, centre: np.ndarray, axes: np.ndarray, angle_deg: float, level: int) -> None:
        """Fill the ellipse of centre (2,) and semi-axes (2,) rotated by ``angle_deg``."""
        centre_fixed = tuple(self._fixed(centre).tolist())
        axes_fixed = tuple(np.rint(axes * self.scale * (1 << _SHIFT)).astype(int).tolist())
        cv2.ellipse(self.image, centre_fixed, axes_fixed, angle_deg, 0.0, 360.0, level, -1, cv2.LINE_8, _SHIFT)

    def downscaled(self) -> np.ndarray:
        """The drawing at the output size: (H, W) float32, each pixel the mean of its supersamples."""
        small = cv2.resize(self.image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        """Output pixel coordinates (..., 2) -> int32 fixed-point coordinates (..., 2) of the supersampled image."""
        return np.rint(((points + 0.5) * self.scale - 0.5) * (1 << _SHIFT)).astype(np.int32)


def _background(rng: np.random.Generator, config: ShapesConfig) -> tuple[np.ndarray, tuple[int, int]]:
    """Smooth random background at 1/8 of the output size: (H/8, W/8) uint8 and its (min, max) grey level.

    Noise with a few blobs, blurred and stretched over a random range of at most ``background_range``
    levels; bilinear upsampling keeps every pixel within that (min, max).
    """
    height, width = (max(2, size // 8) for size in config.image_size)
    small = rng.uniform(-1.0, 1.0, (height, width)).astype(np.float32)
    for _ in range(int(rng.integers(0, 6))):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        cv2.circle(small, centre, int(rng.integers(1, 4)), float(rng.uniform(-2.0, 2.0)), -1)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    spread = rng.uniform(0.0, config.background_range)
    low = rng.uniform(0.0, 255.0 - spread)
    small = np.rint(low + spread * (small - small.min()) / max(float(np.ptp(small)), 1e-6)).astype(np.uint8)
    return small, (int(small.min()), int(small.max()))


def _finish(image: np.ndarray, rng: np.random.Generator, config: ShapesConfig) -> np.ndarray:
    """Blur and noise (H, W) float32 into the final (H, W) uint8 image."""
    if config.blur_sigma > 0.0:
        image = cv2.GaussianBlur(image, (0, 0), config.blur_sigma)
    if config.noise_std > 0.0:
        image = image + config.noise_std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _good_polygons(polygons: np.ndarray, min_edge: float) -> bool:
    """Whether every polygon (K, N, 2) is simple, convex, with angles in [40, 160] deg and edges >= min_edge."""
    edges = np.roll(polygons, -1, axis=1) - polygons
    before = np.roll(edges, 1, axis=1)  # the edge arriving at each vertex
    cross = before[..., 0] * edges[..., 1] - before[..., 1] * edges[..., 0]
    turns = np.degrees(np.arctan2(cross, (before * edges).sum(-1)))
    interior = 180.0 - np.abs(turns)
    convex = (np.abs(np.sign(cross).sum(1)) == polygons.shape[1]) & (np.abs(np.abs(turns.sum(1)) - 360.0) < 1e-6)
    return bool(convex.all() and (interior >= _MIN_ANGLE_DEG).all() and (interior <= _MAX_ANGLE_DEG).all()
                and (np.linalg.norm(edges, axis=-1) >= min_edge).all())


def _convex_polygon(rng: np.random.Generator, canvas: _Canvas, centre: np.ndarray, radius: float,
                    sides: int) -> np.ndarray:
    """(sides, 2) random convex polygon inscribed in the disc (centre, radius), one vertex per angular slice."""
    for _ in range(_MAX_TRIES):
        angles = rng.uniform(0.0, 2 * math.pi) + (np.arange(sides) + rng.uniform(0.2, 0.8, sides)) * 2 * math.pi / sides
        radii = radius * rng.uniform(0.7, 1.0, sides)
        polygon = centre + radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        if _good_polygons(polygon[None], _MIN_EDGE * canvas.side):
            return polygon
    raise RuntimeError(f"no valid {sides}-gon of radius {radius:.1f} px after {_MAX_TRIES} draws")


def _disjoint_discs(rng: np.random.Generator, canvas: _Canvas, count: int, radii: tuple[float, float]
                    ) -> list[tuple[np.ndarray, float]]:
    """Up to ``count`` (centre (2,), radius) discs inside the margin, 5 % of min(H, W) apart; at least one.

    Candidates are drawn at once and kept greedily, in plain floats for speed.
    """
    sizes = rng.uniform(*radii, _PLACEMENT_TRIES * count) * canvas.side
    low = canvas.margin + sizes[:, None]
    centres = rng.uniform(low, np.array([canvas.width - 1, canvas.height - 1]) - low)
    kept: list[tuple[float, float, float]] = []
    for (x, y), radius in zip(centres.tolist(), sizes.tolist()):
        if all(math.hypot(x - u, y - v) >= radius + r + 0.05 * canvas.side for u, v, r in kept):
            kept.append((x, y, radius))
            if len(kept) == count:
                break
    return [(np.array([x, y]), radius) for x, y, radius in kept]


def _draw_polygon(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """One convex polygon of 3-8 vertices -> its vertices (N, 2)."""
    radius = rng.uniform(0.2, 0.4) * canvas.side
    polygon = _convex_polygon(rng, canvas, canvas.centre(rng, radius), radius, int(rng.integers(3, 9)))
    canvas.fill(polygon, canvas.level(rng))
    return polygon


def _draw_multiple_polygons(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """2-5 disjoint convex polygons of 3-6 vertices -> all their vertices (N, 2)."""
    polygons = []
    for centre, radius in _disjoint_discs(rng, canvas, int(rng.integers(2, 6)), (0.12, 0.25)):
        polygons.append(_convex_polygon(rng, canvas, centre, radius, int(rng.integers(3, 7))))
        canvas.fill(polygons[-1], canvas.level(rng))
    return np.concatenate(polygons)


def _draw_ellipses(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """1-5 disjoint filled ellipses, axis ratio >= 0.4 (no pointed ends) -> no points (0, 2)."""
    for centre, radius in _disjoint_discs(rng, canvas, int(rng.integers(1, 6)), (0.06, 0.2)):
        axes = radius * np.array([1.0, rng.uniform(0.4, 1.0)])
        canvas.ellipse(centre, axes, rng.uniform(0.0, 180.0), canvas.level(rng))
    return np.zeros((0, 2))


def _segment_distance(a: tuple[float, float], b: tuple[float, float], c: tuple[float, float],
                      d: tuple[float, float]) -> float:
    """Shortest distance between the segments ab and cd, points (x, y); 0 when they cross. Plain floats: fast."""
    def side(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        """Twice the signed area of the triangle pqr: which side of line pq the point r is on."""
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def to_segment(p: tuple[float, float], q: tuple[float, float], r: tuple[float, float]) -> float:
        """Distance from the point p to the segment qr."""
        dx, dy = r[0] - q[0], r[1] - q[1]
        t = min(1.0, max(0.0, ((p[0] - q[0]) * dx + (p[1] - q[1]) * dy) / max(dx * dx + dy * dy, 1e-12)))
        return math.hypot(p[0] - q[0] - t * dx, p[1] - q[1] - t * dy)

    if side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0:
        return 0.0
    return min(to_segment(a, c, d), to_segment(b, c, d), to_segment(c, a, b), to_segment(d, a, b))


def _draw_lines(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """1-5 segments 1.5-3 px thick, each >= 6 % of min(H, W) clear of the others -> their endpoints (N, 2)."""
    segments: list[tuple[tuple[float, float], tuple[float, float], float]] = []
    wanted, low = int(rng.integers(1, 6)), canvas.margin
    high = (canvas.width - 1 - low, canvas.height - 1 - low)
    for _ in range(_PLACEMENT_TRIES * wanted):
        x, y = rng.uniform((low, low), high).tolist()
        angle, length, thickness = rng.uniform((0.0, 0.15 * canvas.side, 1.5), (2 * math.pi, 0.6 * canvas.side, 3.0))
        start, end = (x, y), (x + length * math.cos(angle), y + length * math.sin(angle))
        clear = all(_segment_distance(start, end, a, b) >= (thickness + t) / 2 + _MIN_EDGE * canvas.side
                    for a, b, t in segments)
        if clear and low <= end[0] <= high[0] and low <= end[1] <= high[1]:
            segments.append((start, end, thickness))
            canvas.line(np.array(start), np.array(end), canvas.level(rng), thickness)
        if len(segments) == wanted:
            break
    return np.array([point for start, end, _ in segments for point in (start, end)]).reshape(-1, 2)


def _draw_star(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """3-5 rays 1.2-2 px thick from a centre, >= 43 deg apart -> centre and tips (N, 2).

    Thin rays keep the concave corners between them within 3 px of the centre.
    """
    radius = rng.uniform(0.2, 0.4) * canvas.side
    centre, rays = canvas.centre(rng, radius), int(rng.integers(3, 6))
    angles = rng.uniform(0.0, 2 * math.pi) + (np.arange(rays) + rng.uniform(0.3, 0.7, rays)) * 2 * math.pi / rays
    tips = centre + radius * rng.uniform(0.5, 1.0, (rays, 1)) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    level, thickness = canvas.level(rng), rng.uniform(1.2, 2.0)
    for tip in tips:
        canvas.line(centre, tip, level, thickness)
    return np.concatenate([centre[None], tips])


def _warped_grid(rng: np.random.Generator, canvas: _Canvas, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Grid points (R+1, C+1, 2) of the board with column edges xs (C+1,) and row edges ys (R+1,), warped.

    The board is rotated at random, its corners moved by up to 15 % of its size (a homography) and its
    centre put in the middle half of the image; every cell passes :func:`_good_polygons` and at least
    4 grid points fall inside the image.
    """
    size = np.array([xs[-1], ys[-1]])
    board = np.array([[0.0, 0.0], [size[0], 0.0], size, [0.0, size[1]]])
    mesh = np.stack(np.meshgrid(xs, ys), axis=-1)
    image_size = np.array([canvas.width - 1, canvas.height - 1])
    for _ in range(_MAX_TRIES):
        angle = rng.uniform(0.0, 2 * math.pi)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        moved = (board + rng.uniform(-0.15, 0.15, (4, 2)) * size - size / 2) @ rotation.T
        target = moved + rng.uniform(0.25, 0.75, 2) * image_size
        homography = cv2.getPerspectiveTransform(board.astype(np.float32), target.astype(np.float32))
        grid = cv2.perspectiveTransform(mesh.reshape(-1, 1, 2), homography).reshape(mesh.shape)
        cells = np.stack([grid[:-1, :-1], grid[:-1, 1:], grid[1:, 1:], grid[1:, :-1]], axis=2).reshape(-1, 4, 2)
        inside = ((grid >= 0) & (grid <= image_size)).all(-1).sum()
        if inside >= 4 and _good_polygons(cells, _MIN_EDGE * canvas.side):
            return grid
    raise RuntimeError(f"no valid warp of a {size[0]:.0f} x {size[1]:.0f} px board after {_MAX_TRIES} draws")


def _draw_board(canvas: _Canvas, rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Fill the warped cells of a board (edges xs (C+1,), ys (R+1,)), each a level unlike its left and
    upper neighbours -> all grid points (N, 2)."""
    grid = _warped_grid(rng, canvas, xs, ys)
    levels = np.zeros((len(ys) - 1, len(xs) - 1), dtype=int)
    for row in range(levels.shape[0]):
        for col in range(levels.shape[1]):
            neighbours = ([levels[row, col - 1]] if col else []) + ([levels[row - 1, col]] if row else [])
            levels[row, col] = canvas.level(rng, *neighbours)
            cell = np.stack([grid[row, col], grid[row, col + 1], grid[row + 1, col + 1], grid[row + 1, col]])
            canvas.fill(cell, int(levels[row, col]))
    return grid.reshape(-1, 2)


def _draw_checkerboard(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """A warped board of 2-6 x 2-6 square cells of 15-30 % of min(H, W) -> grid points (N, 2)."""
    cell = rng.uniform(0.15, 0.3) * canvas.side
    rows, cols = rng.integers(2, 7, 2)
    return _draw_board(canvas, rng, np.arange(cols + 1) * cell, np.arange(rows + 1) * cell)


def _draw_stripes(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """A warped band of 3-9 stripes, widths 8-20 % of min(H, W), length 0.5-1.5 max(H, W) -> corners (N, 2)."""
    widths = rng.uniform(0.08, 0.2, int(rng.integers(3, 10))) * canvas.side
    length = rng.uniform(0.5, 1.5) * max(canvas.width, canvas.height)
    return _draw_board(canvas, rng, np.concatenate([[0.0], np.cumsum(widths)]), np.array([0.0, length]))


def _cube_faces(rotation: np.ndarray) -> list[list[int]]:
    """The 3 faces of the unit box seen by an orthographic camera looking along +z, after ``rotation`` (3, 3).

    Vertex ``v`` of the box has coordinate ``bit k of v`` along axis k; a face is 4 vertex indices in cyclic
    order. The face of axis k on side ``s`` faces the camera when its outward normal has a negative z.
    """
    faces = []
    for axis in range(3):
        side = 1 if rotation[2, axis] < 0 else 0
        first, second = [other for other in range(3) if other != axis]
        corners = [(0, 0), (1, 0), (1, 1), (0, 1)]
        faces.append([side << axis | a << first | b << second for a, b in corners])
    return faces


def _cube_view(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, list[list[int]]]:
    """A box of sides 20-45 % of min(H, W), randomly rotated and projected: vertices (8, 2) about (0, 0), 3 faces.

    Each visible face is tilted at least 20 deg from edge-on; faces and the hexagonal silhouette pass
    :func:`_good_polygons`.
    """
    bits = (np.arange(8)[:, None] >> np.arange(3)) & 1
    for _ in range(_MAX_TRIES):
        rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        if (np.abs(rotation[2]) < math.sin(math.radians(20.0))).any():
            continue
        projected = ((bits - 0.5) * rng.uniform(0.2, 0.45, 3) * canvas.side @ rotation.T)[:, :2]
        faces = _cube_faces(rotation)
        visible = sorted({vertex for face in faces for vertex in face})
        hull = cv2.convexHull(projected[visible].astype(np.float32))[:, 0].astype(np.float64)
        if len(hull) == 6 and _good_polygons(projected[np.array(faces)], _MIN_EDGE * canvas.side) \
                and _good_polygons(hull[None], _MIN_EDGE * canvas.side):
            return projected, faces
    raise RuntimeError(f"no valid cube view after {_MAX_TRIES} draws")


def _draw_cube(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """A box with faces of 3 different greys, placed inside the margin -> its 7 visible corners (7, 2)."""
    projected, faces = _cube_view(rng, canvas)
    projected = projected + canvas.centre(rng, float(np.linalg.norm(projected, axis=1).max()))
    levels: list[int] = []
    for face in faces:
        levels.append(canvas.level(rng, *levels))
        canvas.fill(projected[face], levels[-1])
    return projected[sorted({vertex for face in faces for vertex in face})]


_DRAW = {
    "lines": _draw_lines,
    "polygon": _draw_polygon,
    "multiple_polygons": _draw_multiple_polygons,
    "ellipses": _draw_ellipses,
    "star": _draw_star,
    "checkerboard": _draw_checkerboard,
    "stripes": _draw_stripes,
    "cube": _draw_cube,
}
