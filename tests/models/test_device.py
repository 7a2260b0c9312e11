import pytest
import torch

from danlu.models import pick_device, pick_dtype
from danlu.utils.errors import UsageError


def test_auto_is_cpu_without_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert pick_device("auto").type == "cpu"


def test_cuda_without_gpu_is_a_usage_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(UsageError, match="no CUDA GPU is visible"):
        pick_device("cuda:0")


def test_bad_device_name():
    with pytest.raises(UsageError, match="unknown device 'gpu7'"):
        pick_device("gpu7")


def test_dtypes():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32
    assert pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert pick_dtype("float16", cpu) == torch.float16
