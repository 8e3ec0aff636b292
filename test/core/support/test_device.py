"""Device strings of the CLIs and nodes."""
import pytest
import torch

from usp_core.support.device import resolve_device


def test_known_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "mps"])
def test_unknown_devices_are_refused(bad):
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")
