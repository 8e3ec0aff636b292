"""Keypoint methods under evaluation: UnsuperPoint, SuperPoint and OpenCV detector+descriptors, behind one interface.

Every method takes a grey (H, W) uint8 image and returns its :class:`usp_core.inference.features.Features`: at
most top_k keypoints, the best by score first, with their descriptors (float32, or packed bits as
uint8 for the binary methods). ORB and SIFT are in OpenCV's main module; AKAZE and BRISK are
offered when the installed OpenCV has them (OpenCV 5 moved them to the contrib build). AKAZE and
BRISK have no point budget: they detect with a threshold low enough to find top_k points on nearly
every image, and keep the top_k by response.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np
import torch

from usp_core.inference.backends.base import BackendError
from usp_core.inference.detector import DetectorConfig, KeypointDetector
from usp_core.inference.features import Features
from usp_core.inference.weights import load_network
from usp_core.models.layers import sample_descriptors
from usp_core.models.superpoint import heatmap_points
from usp_core.support.errors import first_line
from usp_core.training.homographic_adaptation import AdaptationConfig, homographic_adaptation

# Detection thresholds of the methods without a point budget, set so that nearly every image yields top-k points.
# Measured on the 96 Oxford and HPatches evaluation images: share below 300 points at 240x320 / below 1000 at 480x640.
AKAZE_THRESHOLD = 1e-4  # OpenCV's default 1e-3: 49% / 33% below; 1e-4: 1% / 0%
BRISK_THRESHOLD = 15  # FAST score; OpenCV's default 30: 9% / 12% below; 15: 0% / 2%


class MethodError(ValueError):
    """A method that cannot be built (unknown name, bad option); the message is one readable line."""


class Method(Protocol):
    """A detector+descriptor under evaluation."""

    name: str
    binary: bool  # descriptors are packed bits compared by Hamming distance

    def extract(self, image: np.ndarray) -> Features:
        """(H, W) uint8 grey image -> its top-k keypoints, best score first."""


def top_k(features: Features, k: int) -> Features:
    """The k best rows of ``features`` by score, best first (ties in row order)."""
    return features.take(np.argsort(-features.scores.astype(np.float64), kind="stable")[:k])


class OpenCVMethod:
    """An OpenCV Feature2D (detectAndCompute), keeping its top_k keypoints by response."""

    def __init__(self, name: str, detector: cv2.Feature2D, binary: bool, top_k: int) -> None:
        self.name = name
        self.binary = binary
        self.top_k = top_k
        self.detector = detector

    def extract(self, image: np.ndarray) -> Features:
        """(H, W) uint8 grey image -> Features: (N, 2) keypoints, (N,) responses, (N, D) descriptors."""
        keypoints, descriptors = self.detector.detectAndCompute(image, None)
        width = self.detector.descriptorSize()
        dtype = np.uint8 if self.binary else np.float32
        size = (image.shape[1], image.shape[0])
        if descriptors is None or not keypoints:
            return Features(np.zeros((0, 2)), np.zeros(0), np.zeros((0, width), dtype), size)
        points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        responses = np.array([kp.response for kp in keypoints], dtype=np.float32)
        return top_k(Features(points, responses, descriptors.astype(dtype), size), self.top_k)


LEARNED = {"usp": "unsuperpoint", "superpoint": "superpoint", "superpoint-ha": "superpoint"}  # -> bundled weights


class LearnedMethod:
    """A network of ours (UnsuperPoint or SuperPoint) through usp_core.inference.KeypointDetector (top-k inside)."""

    binary = False

    def __init__(self, detector, name: str) -> None:
        self.name = name
        self.detector = detector

    def extract(self, image: np.ndarray) -> Features:
        """(H, W) uint8 grey image -> Features: (N, 2) keypoints, (N,) scores, (N, D) float32 descriptors."""
        return self.detector.detect(image)[0]


class AdaptedMethod:
    """SuperPoint with Homographic Adaptation at test time (usp_core.training.homographic_adaptation).

    The network's heatmap averaged over ``config.num_warps`` random warps (the identity first; one
    warp = the plain heatmap), decoded by NMS (usp_core.models.superpoint.heatmap_points, the paper's
    radius 4, border 4) into its top-k points, with descriptors sampled from the unwarped image's
    descriptor map. The warps are the same for every image (seed 0), so a run is reproducible.
    """

    binary = False

    def __init__(self, model, config, top_k_points: int, name: str = "superpoint-ha") -> None:
        self.name, self.model, self.config, self.top_k = name, model.eval(), config, top_k_points

    def extract(self, image: np.ndarray) -> Features:
        """(H, W) uint8 grey image -> Features: (N, 2) keypoints, (N,) scores, (N, D) float32 descriptors."""
        height, width = image.shape
        padded = np.pad(image, ((0, -height % 8), (0, -width % 8)), mode="edge")
        tensor = torch.from_numpy(padded).float().div_(255.0)[None]
        with torch.no_grad():
            heatmap, _ = homographic_adaptation(self.model.heatmap, tensor, self.config,
                                                torch.Generator().manual_seed(0))
            points, scores = heatmap_points(heatmap[:height, :width], threshold=1e-6, max_points=self.top_k)
            raw = self.model.logits(tensor[None])[1]
            where = torch.from_numpy(points).T.reshape(1, 2, 1, -1)
            descriptors = sample_descriptors(raw, where, self.model.cell)[0, :, 0].T
        return Features(points, scores, descriptors.numpy().astype(np.float32), (width, height))


def _opencv_factory(name: str) -> Callable[..., cv2.Feature2D] | None:
    """cv2.<name>_create from the main module or xfeatures2d (contrib), or None when absent."""
    for module in (cv2, getattr(cv2, "xfeatures2d", None)):
        factory = getattr(module, f"{name}_create", None) if module is not None else None
        if factory is not None:
            return factory
    return None


def _opencv_builders() -> dict[str, Callable[[int], OpenCVMethod]]:
    """Builders (top_k -> method) of the OpenCV methods this OpenCV build offers."""
    builders: dict[str, Callable[[int], OpenCVMethod]] = {}
    orb, sift, akaze, brisk = (_opencv_factory(n) for n in ("ORB", "SIFT", "AKAZE", "BRISK"))
    if orb is not None:
        builders["orb"] = lambda k: OpenCVMethod("orb", orb(nfeatures=k), True, k)
    if sift is not None:
        builders["sift"] = lambda k: OpenCVMethod("sift", sift(nfeatures=k), False, k)
    if akaze is not None:
        builders["akaze"] = lambda k: OpenCVMethod("akaze", akaze(threshold=AKAZE_THRESHOLD), True, k)
    if brisk is not None:
        builders["brisk"] = lambda k: OpenCVMethod("brisk", brisk(thresh=BRISK_THRESHOLD), True, k)
    return builders


def _adapted(top_k_points: int, weights: str | Path | None, warps: int) -> AdaptedMethod:
    """The "superpoint-ha" method; CheckpointError for weights that are not a SuperPoint, MethodError for bad warps."""
    if warps < 1:
        raise MethodError(f"superpoint-ha: the number of warps must be >= 1, got {warps}")
    model = load_network(weights or LEARNED["superpoint-ha"], architecture="superpoint")
    return AdaptedMethod(model, AdaptationConfig(num_warps=warps), top_k_points)


def available_methods() -> tuple[str, ...]:
    """Names accepted by build_method: the learned methods (LEARNED) and the installed OpenCV's."""
    return (*LEARNED, *_opencv_builders())


def default_methods() -> tuple[str, ...]:
    """The methods evaluated when none are named: all but "superpoint-ha" (100 network runs per image)."""
    return tuple(name for name in available_methods() if name != "superpoint-ha")


def build_method(name: str, top_k_points: int, weights: str | Path | None = None, device: str = "cpu",
                 backend: str = "auto", nms_radius: int | None = None, adaptation_warps: int = 100,
                 precision: str = "auto", calibration_dir: str | Path | None = None) -> Method:
    """The method called name keeping top_k_points keypoints per image.

    A learned method loads ``weights`` (None: its bundled weights, see LEARNED; any checkpoint of
    either architecture works) on device, selects points with ``nms_radius``
    (None: the DetectorConfig default) and prepares its inference backend
    (usp_core.inference.backends) in ``precision`` (int8: calibrated on ``calibration_dir``); it raises
    usp_core.support.checkpoint.CheckpointError when the weights cannot be loaded, MethodError when the
    backend cannot run. "superpoint-ha" (:class:`AdaptedMethod`) runs
    the SuperPoint network in torch on the CPU with ``adaptation_warps`` warps. Unknown names raise MethodError.
    """
    if top_k_points < 1:
        raise MethodError(f"top-k must be positive, got {top_k_points}")
    if name == "superpoint-ha":
        return _adapted(top_k_points, weights, adaptation_warps)
    if name in LEARNED:
        selection = {} if nms_radius is None else {"nms_radius": nms_radius}
        try:
            config = DetectorConfig(max_keypoints=top_k_points, precision=precision,
                                    calibration_dir=str(calibration_dir or ""), **selection)
            detector = KeypointDetector.from_pretrained(weights or LEARNED[name], device=device, config=config,
                                                        backend=backend)
            detector.prepare()
        except (BackendError, ValueError) as error:  # a backend that cannot run here, or a bad name
            raise MethodError(f"{name}: {first_line(error)}") from error
        return LearnedMethod(detector, name)
    builders = _opencv_builders()
    if name not in builders:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return builders[name](top_k_points)
