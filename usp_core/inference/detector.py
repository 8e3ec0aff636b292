"""Inference wrapper: images in, per-image keypoints, scores and descriptors out, for UnsuperPoint and SuperPoint.

:class:`KeypointDetector` turns arrays or tensors of any size into the model's input (grey, float in
[0, 1], a multiple of 8 in size), runs the dense model in one of the backends of
:mod:`usp_core.inference.backends` (eager torch, OpenVINO, ONNX Runtime; ``auto`` picks the fastest here) and
selects points per image with the shared code of :mod:`usp_core.inference.selection`: border removal, score
threshold, optional radius NMS and top-k by score, so every backend yields the same points. The
network may run at another size than the input's (:func:`inference_size`, set in
:class:`DetectorConfig`); keypoints are always returned in the pixels of the given image (OpenCV
convention, centre of the top-left pixel at (0, 0)), as numpy :class:`usp_core.inference.features.Features`, so
nothing needs to be undone by the caller. Batches return a list, since the counts differ between images.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from usp_core.inference.backends.base import Runner, check
from usp_core.inference.backends.choose import make_runner
from usp_core.inference.features import Features
from usp_core.inference.graph_cache import weights_digest
from usp_core.inference.precision import PRECISIONS, PrecisionGate, gate_path
from usp_core.inference.selection import select_points
from usp_core.inference.weights import load_network, resolve_weights
from usp_core.models.superpoint import SuperPoint
from usp_core.models.unsuperpoint import UnsuperPoint
from usp_core.support.image_files import resize_image

__all__ = ["DetectorConfig", "KeypointDetector", "MAX_NMS_RADIUS", "inference_size"]

logger = logging.getLogger(__name__)

ImageInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]

_GREY_WEIGHTS = {"rgb": (0.299, 0.587, 0.114), "bgr": (0.114, 0.587, 0.299)}  # ITU-R BT.601 luma
_FULL_SCALE = {torch.uint8: 255.0, torch.uint16: 65535.0}  # integer images are divided by this
MAX_NMS_RADIUS = 16  # px; radius NMS cost grows fast with the radius (see usp_core.inference.selection.radius_nms)


@dataclass
class DetectorConfig:
    """Point selection and input handling of :class:`KeypointDetector`."""

    max_keypoints: int | None = 1000  # keep at most this many points per image, best scores first; None keeps all
    score_threshold: float = 0.0  # keep points with score >= this
    border: int = 4  # drop points closer than this many pixels to the edge of the (padded: original; cropped: kept) image
    nms_radius: int = 0  # drop points with a better kept point within this many pixels (greedy); 0 = off; <= MAX_NMS_RADIUS
    size_policy: str = "pad"  # "pad": replicate-pad bottom/right up to a multiple of 8; "crop": drop the bottom/right remainder
    precision: str = "auto"  # fp32 | fp16 | bf16 | int8 | auto: what the network computes in (inference.precision)
    calibration_dir: str = ""  # int8: folder of calibration photos ("" = $USP_ROS_CALIBRATION_DIR)
    channel_order: str = "rgb"  # channel order of 3-channel inputs: "rgb", or "bgr" for cv2.imread images
    inference_width: int = 0  # network input width (multiple of 8); 0 = the input's, or kept aspect (inference_size)
    inference_height: int = 0  # network input height (multiple of 8); 0 = the input's, or kept aspect
    max_inference_side: int = 0  # > 0 (multiple of 8): network input scaled down to no side over this; 0 = off

    def __post_init__(self) -> None:
        for name in ("inference_width", "inference_height", "max_inference_side"):
            value = getattr(self, name)
            if value < 0 or value % 8:
                raise ValueError(f"{name} must be a multiple of 8, >= 0 (0 = off), got {value}")
        if self.size_policy not in ("pad", "crop"):
            raise ValueError(f"size_policy must be 'pad' or 'crop', got {self.size_policy!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.channel_order not in _GREY_WEIGHTS:
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        if self.max_keypoints is not None and self.max_keypoints < 1:
            raise ValueError(f"max_keypoints must be positive or None, got {self.max_keypoints}")
        if self.border < 0:
            raise ValueError(f"border must be >= 0, got {self.border}")
        if not 0 <= self.nms_radius <= MAX_NMS_RADIUS:
            raise ValueError(f"nms_radius must be in [0, {MAX_NMS_RADIUS}], got {self.nms_radius}")


def inference_size(height: int, width: int, config: DetectorConfig) -> tuple[int, int] | None:
    """(h, w) the network runs at for a height x width input, or None for the input's own size.

    ``config.inference_width`` / ``inference_height`` 0 means "as the input"; when only one is set the
    other keeps the aspect ratio (rounded to a multiple of 8, at least 8). ``max_inference_side`` > 0 then
    scales the size down, aspect kept and each side rounded down to a multiple of 8 (at least 8), until no
    side exceeds it.
    """
    inference_width, inference_height = config.inference_width, config.inference_height
    if inference_width == 0 and inference_height == 0:
        inference_height, inference_width = height, width
    elif inference_height == 0:
        inference_height = max(8, int(round(height * inference_width / width / 8.0)) * 8)
    elif inference_width == 0:
        inference_width = max(8, int(round(width * inference_height / height / 8.0)) * 8)
    size = (inference_height, inference_width)
    max_side = config.max_inference_side
    if 0 < max_side < max(size):
        size = tuple(max(8, side * max_side // max(size) // 8 * 8) for side in size)
    return None if size == (height, width) else size


def _as_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image or batch as a (B, C, H, W) tensor of its original dtype.

    numpy: (H, W) or (H, W, C); torch: (H, W), (C, H, W) or (B, C, H, W).
    """
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(f"numpy images must be (H, W) or (H, W, C), got shape {image.shape}")
        array = image if image.flags.writeable else image.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    if isinstance(image, torch.Tensor):
        if image.ndim not in (2, 3, 4):
            raise ValueError(f"tensor images must be (H, W), (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
        return image.reshape((1,) * (4 - image.ndim) + tuple(image.shape))
    raise TypeError(f"expected a numpy array or torch tensor, got {type(image).__name__}")


def _network_input(image: np.ndarray | torch.Tensor, config: DetectorConfig) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image or batch -> ((B, C, h, w) tensor at :func:`inference_size`, (W, H) of the input).

    numpy images are resized with cv2 (:func:`usp_core.support.image_files.resize_image`), in their own dtype;
    tensors with antialiased bilinear interpolation, as float in [0, 1]. Both keep the pixel-centre convention.
    """
    if isinstance(image, np.ndarray) and image.ndim in (2, 3):
        height, width = image.shape[:2]
        size = inference_size(height, width, config)
        return _as_tensor(image if size is None else resize_image(image, size)), (width, height)
    batch = _as_tensor(image)
    height, width = batch.shape[-2:]
    size = inference_size(height, width, config)
    if size is not None:
        batch = F.interpolate(_to_unit_float(batch), size=size, mode="bilinear", align_corners=False, antialias=True)
    return batch, (width, height)


def _batches(images: ImageInput, config: DetectorConfig) -> list[tuple[torch.Tensor, tuple[int, int]]]:
    """Inputs as (B, C, h, w) network-size batches with the (W, H) of their input images; consecutive images of
    one size stacked, order kept."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return [_network_input(images, config)]
    batches = []
    prepared = (_network_input(image, config) for image in images)
    for (_, _, input_size), group in itertools.groupby(
            prepared, key=lambda item: (tuple(item[0].shape[1:]), item[0].dtype, item[1])):
        batches.append((torch.cat([batch for batch, _ in group]), input_size))
    return batches


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> /255, uint16 -> /65535, floats kept (assumed in [0, 1]); returns float32.

    On the CPU this and the other input steps run in numpy (one thread, same values): torch's thread
    pool contends with the inference runtimes' own threads, and at 640x480 right after an OpenVINO
    run (2 busy cores) this step took 18 ms in torch against 0.4 ms in numpy.
    """
    scale = _FULL_SCALE.get(images.dtype)
    if scale is None:
        if images.is_floating_point():
            return images.float()
        raise TypeError(f"images must be uint8, uint16 or float, got {images.dtype}")
    if images.device.type == "cpu":
        return torch.from_numpy(np.divide(images.numpy(), np.float32(scale), dtype=np.float32))
    return images.float().div_(scale)


def _to_channels(images: torch.Tensor, channels: int, channel_order: str) -> torch.Tensor:
    """(B, C, H, W) with C in {1, 3} -> (B, channels, H, W); colour to grey with BT.601 weights."""
    have = images.shape[1]
    if have not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {have}")
    if have == channels:
        return images
    if channels == 1 and images.device.type == "cpu":  # numpy: see _to_unit_float
        weights = np.asarray(_GREY_WEIGHTS[channel_order], dtype=images.numpy().dtype)
        return torch.from_numpy((images.numpy() * weights[None, :, None, None]).sum(axis=1, keepdims=True))
    if channels == 1:
        weights = torch.tensor(_GREY_WEIGHTS[channel_order], device=images.device, dtype=images.dtype)
        return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"model expects {channels} input channels; only 1 or 3 are supported")


def _fit_to_cells(images: torch.Tensor, cell: int, policy: str) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (replicate, bottom/right) or crop (bottom/right) to multiples of ``cell``.

    Returns the model input and the (height, width) of the region that holds real image content.
    The top-left origin never moves, so keypoints need no shift afterwards.
    """
    height, width = images.shape[-2:]
    if policy == "crop":
        kept = (height // cell * cell, width // cell * cell)
        if min(kept) == 0:
            raise ValueError(f"image of {height}x{width} is smaller than one {cell}x{cell} cell; use size_policy='pad'")
        return images[..., :kept[0], :kept[1]], kept
    pad_h, pad_w = -height % cell, -width % cell
    if (pad_h or pad_w) and images.device.type == "cpu":  # numpy: see _to_unit_float
        images = torch.from_numpy(np.pad(images.numpy(), ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge"))
    elif pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return images, (height, width)


class KeypointDetector:
    """UnsuperPoint or SuperPoint keypoints and descriptors for images of any size, one :class:`Features` per image.

    The model is put in eval mode (BatchNorm uses its running statistics). Inputs: a numpy image
    (H, W) or (H, W, 3) uint8/uint16/float, a list of them (sizes may differ), or a tensor
    (B, C, H, W) / (C, H, W) / (H, W); floats are taken to be in [0, 1]; colour becomes grey.

    ``backend``: "auto" (torch on CUDA; on the CPU openvino, else onnxruntime, else torch), "torch",
    "onnxruntime" or "openvino". Backends other than torch run a graph exported from the model's
    weights at first use (cached on disk under ``cache_dir``, see usp_core.inference.graph_cache): build a new
    detector after changing the weights. ``num_threads`` > 0 caps the CPU threads of every backend
    (the torch backend sets torch's process-wide thread count, see usp_core.inference.backends.torch_runner).
    ``config.precision`` "auto" on the CPU runs the fastest precision that ``gate`` (the weights' accuracy
    gate, which :meth:`from_pretrained` reads) passed and this CPU supports, else fp32.

    Not thread-safe: use a detector from one thread at a time (the OpenVINO backend reuses one infer
    request per input shape, and the dense maps it returns are views into that request's buffers).
    """

    def __init__(self, model: UnsuperPoint | SuperPoint, config: DetectorConfig | None = None, backend: str = "auto",
                 num_threads: int = 0, cache_dir: str | Path | None = None, gate: PrecisionGate | None = None) -> None:
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {num_threads}")
        self.model = model.eval()
        check(backend, self.device)
        self.config = config if config is not None else DetectorConfig()
        self.requested_backend = backend
        self.num_threads = num_threads
        self.cache_dir = cache_dir
        self.gate = gate
        self._runner: Runner | None = None

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path | None = None, device: str | torch.device = "cpu",
                        config: DetectorConfig | None = None, backend: str = "auto", num_threads: int = 0,
                        cache_dir: str | Path | None = None) -> KeypointDetector:
        """Detector from a checkpoint dict with "model" (state dict) and "config" (with a "model" section).

        The checkpoint says which network it holds (UnsuperPoint, or SuperPoint/MagicPoint); it is
        loaded by :func:`usp_core.inference.weights.load_network`: ``None`` or "bundled" loads the
        bundled weights (usp_core/weights/unsuperpoint.pt), the name of a shipped model ("unsuperpoint",
        "superpoint", "unsuperpoint_vgg") usp_core/weights/<name>.pt, anything else is a checkpoint
        path. Its accuracy gate (``<stem>.gate.json`` beside it, written by usp-gate) is used when it
        measured these very weights. Raises CheckpointError with a one-line message when the file is
        missing, corrupt or does not fit the model, ValueError when its gate file is unreadable. The
        backend is prepared at the first detect (or by :meth:`prepare`).
        """
        model = load_network(path_or_name, device)
        return cls(model, config, backend, num_threads, cache_dir, _matching_gate(path_or_name, model))

    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        tensor = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def prepare(self) -> str:
        """Make the backend ready now (export or load its cached graph) and return its name.

        Raises ValueError or usp_core.inference.backends.BackendError (one line) when the requested backend
        cannot run here; "auto" falls back to torch instead.
        """
        if self._runner is None:
            self._runner = make_runner(self.requested_backend, self.model, self.device, self.num_threads,
                                       self.cache_dir, self.config.precision, self.gate, self.config.calibration_dir)
        return self._runner.name

    @property
    def precision(self) -> str:
        """The precision the network runs in ("fp32", "fp16", "bf16", "int8"); prepares the backend if needed."""
        self.prepare()
        return self._runner.precision

    @property
    def backend(self) -> str:
        """Name of the backend that runs the network ("torch", "onnxruntime", "openvino"); prepares it if needed."""
        return self.prepare()

    def to(self, device: str | torch.device) -> KeypointDetector:
        """Move the model to ``device``; the backend is chosen again at the next use. Returns self."""
        self.model.to(device)
        self._runner = None
        return self

    def detect(self, images: ImageInput) -> list[Features]:
        """Detect in one image, a batch tensor or a list of images: a list with one numpy Features per image.

        Each image runs at :func:`inference_size` of its own size (``config.inference_width`` etc.; the
        border applies in those pixels); keypoints are in the input image's pixels and ``image_size`` is
        the input's (W, H).
        """
        results: list[Features] = []
        for batch, input_size in _batches(images, self.config):
            results.extend(self._detect_batch(batch, input_size))
        return results

    def _detect_batch(self, batch: torch.Tensor, input_size: tuple[int, int]) -> list[Features]:
        """(B, C, h, w) of one size, from inputs of (W, H) = input_size -> B Features in input pixels."""
        self.prepare()
        network_size = (batch.shape[-1], batch.shape[-2])
        images = _to_unit_float(batch.detach().to(self.device))
        images = _to_channels(images, self.model.config.in_channels, self.config.channel_order)
        images, valid_size = _fit_to_cells(images, self.model.cell, self.config.size_policy)
        score, position, descriptors = self._runner(images.contiguous())
        config = self.config
        results = []
        for index in range(len(score)):
            selected = select_points(score[index, 0], position[index], descriptors[index], valid_size,
                                     cell=self.model.cell, border=config.border,
                                     score_threshold=config.score_threshold, nms_radius=config.nms_radius,
                                     max_keypoints=config.max_keypoints)
            results.append(Features(*selected, image_size=network_size).resized(input_size))
        return results


def _matching_gate(path_or_name: str | Path | None, model: torch.nn.Module) -> PrecisionGate | None:
    """The gate beside the checkpoint when it measured these weights (else None, with a log line)."""
    path = gate_path(resolve_weights(path_or_name))
    gate = PrecisionGate.read(path)
    if gate is not None and gate.weights != weights_digest(model):
        logger.warning("precision gate %s measured other weights; precision auto runs fp32", path)
        return None
    return gate
