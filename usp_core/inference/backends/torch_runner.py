"""The torch backend: the eager module under ``torch.inference_mode``, on whatever device it lives."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["TorchRunner"]


class TorchRunner:
    """Runs ``model`` itself, so later changes to its weights or device take effect at once.

    ``num_threads`` > 0: torch's CPU thread count, which is process-wide, is set to it before each
    call that finds it different. This is the one place a detector's ``num_threads`` reaches torch:
    the detector node and the benchmarks pass it to KeypointDetector and do not set torch's count.
    """

    name = "torch"

    def __init__(self, model: nn.Module, num_threads: int = 0) -> None:
        self.model = model
        self.num_threads = num_threads

    def __call__(self, images: torch.Tensor, half: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """images (B, C, H, W) float32 on the model's device -> dense maps as numpy float32 (B, ., h, w).

        ``half``: float16 autocast, on CUDA only.
        """
        if self.num_threads and torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)
        use_half = half and images.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(device_type=images.device.type, dtype=torch.float16,
                                                    enabled=use_half):
            dense = self.model(images)
            return tuple(map_.float().cpu().numpy() for map_ in (dense.score, dense.position, dense.descriptors))
