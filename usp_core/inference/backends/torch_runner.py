"""The torch backend: the eager module under ``torch.inference_mode``, on whatever device it lives, in float32 or
under float16 / bfloat16 autocast on CUDA."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["TorchRunner"]

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}  # precision -> autocast dtype (CUDA)


class TorchRunner:
    """Runs ``model`` itself, so later changes to its weights or device take effect at once.

    ``num_threads`` > 0: torch's CPU thread count, which is process-wide, is set to it before each
    call that finds it different. This is the one place a detector's ``num_threads`` reaches torch:
    the detector node and the benchmarks pass it to KeypointDetector and do not set torch's count.
    """

    name = "torch"

    def __init__(self, model: nn.Module, num_threads: int = 0, precision: str = "fp32") -> None:
        self.model = model
        self.num_threads = num_threads
        self.precision = precision  # fp32, or fp16 / bf16 autocast (CUDA; see usp_core.inference.precision)

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 on the model's device -> dense maps as numpy float32 (B, ., h, w)."""
        if self.num_threads and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        autocast = AUTOCAST.get(self.precision)
        with torch.inference_mode(), torch.autocast(device_type=images.device.type, dtype=autocast or torch.float16,
                                                    enabled=autocast is not None):
            dense = self.model(images)
            return tuple(map_.float().cpu().numpy() for map_ in (dense.score, dense.position, dense.descriptors))
