"""Every node, as its own process, through its parameter services: each parameter declared with a description (and
its read-only flag), an invalid runtime change refused with a reason leaving the old value in force, and a bad
start value ending the process with one FATAL line and exit status 1 (usp_ros.support.run)."""
import pytest
import torch
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

from usp_ros.nodes import detector, image_source, matcher

from .conftest import service_answer

IMPLICIT = {"use_sim_time", "start_type_description_service"}  # declared by rclpy itself

# node -> (module run with -m, node name, its parameter table, invalid runtime changes)
NODES = {
    "detector": ("usp_ros.nodes.detector", "detector", detector.PARAMETERS, [
        ("max_keypoints", 0),  # out of range
        ("device", "gpu"),  # not a device (validate)
        ("inference_width", 100),  # not a multiple of 8
        ("backend", "onnxruntime"),  # read-only (the node runs torch)
    ]),
    "lifecycle_detector": ("usp_ros.nodes.lifecycle_detector", "detector", detector.PARAMETERS, [
        ("device", "gpu"),  # validated while unconfigured too
        ("score_threshold", 1.5),  # out of range
    ]),
    "matcher": ("usp_ros.nodes.matcher", "matcher", matcher.PARAMETERS, [
        ("method", "foo"),  # not one of the choices
        ("ratio_test", 2.0),  # out of range
        ("device", "cuda:7" if not torch.cuda.is_available() else "gpu"),  # no such device (validate)
        ("num_threads", 2),  # read-only
    ]),
    "image_source": ("usp_ros.nodes.image_source", "image_source", image_source.PARAMETERS, [
        ("rate", 10.0),  # every parameter is read-only
        ("source", "folder"),
    ]),
}
BAD_START = {  # node -> a --ros-args value that the node cannot start with, and what the fatal line names
    "detector": ("max_keypoints:=0", "max_keypoints"),
    "lifecycle_detector": ("score_threshold:=1.5", "score_threshold"),  # a bad choice fails configure instead
    "matcher": ("ratio_test:=2.0", "ratio_test"),
    "image_source": ("encoding:=yuv422", "encoding must be one of"),
}


def start(spawn, node: str, model, *parameters: str, namespace: str = "/params_test"):
    module = NODES[node][0]
    args = ["-m", module, "--ros-args", "-r", f"__ns:={namespace}"]
    if node == "detector":
        parameters = (f"model_path:={model}", "backend:=torch", "num_threads:=1", *parameters)
    for parameter in parameters:
        args += ["-p", parameter]
    return spawn(*args, name=node)


@pytest.mark.parametrize("node", sorted(NODES))
def test_parameters_are_described_and_invalid_changes_refused(node, ros_node, spawn, wait, tiny_model):
    _, name, specs, invalid = NODES[node]
    child = start(spawn, node, tiny_model)
    client = AsyncParameterClient(ros_node, f"/params_test/{name}")
    assert client.wait_for_services(timeout_sec=60), f"{node} did not come up: exit status {child.poll()}"
    declared = set(service_answer(lambda: client.list_parameters()).result.names) - IMPLICIT
    assert declared == set(specs)
    names = sorted(specs)
    for parameter_name, descriptor in zip(names, service_answer(lambda: client.describe_parameters(names)).descriptors):
        assert descriptor.name == parameter_name and descriptor.description.strip(), f"{parameter_name} undescribed"
        assert descriptor.read_only == specs[parameter_name].read_only, parameter_name

    for parameter_name, value in invalid:
        before = parameter_value_to_python(service_answer(lambda: client.get_parameters([parameter_name])).values[0])
        (result,) = service_answer(lambda: client.set_parameters([Parameter(parameter_name, value=value)])).results
        assert not result.successful, f"{node}: {parameter_name}={value!r} must be refused"
        assert result.reason.strip(), f"{node}: refusing {parameter_name}={value!r} must give a reason"
        after = parameter_value_to_python(service_answer(lambda: client.get_parameters([parameter_name])).values[0])
        assert after == before != value, f"{node}: {parameter_name} changed to {after!r} by a refused change"
    assert child.poll() is None, f"{node} died"


@pytest.mark.parametrize("node", sorted(BAD_START))
def test_a_bad_start_value_ends_the_node_with_one_fatal_line(node, spawn, wait, tmp_path, tiny_model):
    value, named = BAD_START[node]
    child = start(spawn, node, tiny_model, value)
    assert wait(lambda: child.poll() is not None, timeout=60), f"{node} kept running with {value}"
    lines = (tmp_path / f"{node}.log").read_text().strip().splitlines()
    assert child.returncode == 1 and len(lines) == 1, lines
    assert "FATAL" in lines[0] and "cannot start" in lines[0] and named in lines[0], lines
