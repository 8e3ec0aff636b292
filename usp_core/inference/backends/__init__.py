"""Inference backends: the runtime that evaluates the dense network, behind one small interface.

A runner takes the network input ``images (B, C, H, W)`` float32 in [0, 1] (H, W multiples of the
cell) on the model's device and returns the dense maps as float32 numpy arrays ``(score (B, 1, h, w),
position (B, 2, h, w), descriptors (B, D, h, w))``, valid until its next call (they may be views into
the runtime's buffers); point selection is shared (usp_core.inference.selection) and copies what it keeps.

- ``torch``: the eager module (any device, float16 autocast on CUDA when asked).
- ``openvino``: the module exported with ``torch.export`` and converted by ``openvino.convert_model``,
  compiled for the CPU in float32 per input shape. The fastest on a CPU: with the light VGG weights
  (unsuperpoint_vgg) at 240x320, usp-bench timed it at about 0.8x SIFT's time on 2 busy cores (run
  usp-bench for this machine's figures).
- ``onnxruntime``: the module exported to ONNX (dynamic shapes) and run by ONNX Runtime on the CPU.

``auto`` takes torch on a CUDA device; on the CPU the first of openvino and onnxruntime that is
installed and converts the model, else torch, logging why. Exported graphs are cached on disk
(usp_core.inference.graph_cache), so only the first use of given weights pays for the export.
"""
from usp_core.inference.backends.base import BACKENDS, BackendError, Runner, check, require
from usp_core.inference.backends.choose import make_runner

__all__ = ["BACKENDS", "BackendError", "Runner", "check", "make_runner", "require"]
