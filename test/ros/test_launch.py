"""launch/detector.launch.py (and frontend.launch.py's backend argument), config/*.yaml and config/usp.rviz.

Without `launch` (not installable here): the launch file parses and declares its arguments, and every
parameter of each node's params file is declared by that node (started with the file, read back
through its parameter services). With `launch` and `launch_ros`: the description builds and its
substitutions resolve to the installed files.
"""
import ast
import importlib.util
import os
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

from usp_core.backends import BACKENDS
from usp_core.checkpoint import save_checkpoint
from usp_core.model import ModelConfig, UnsuperPoint

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "detector.launch.py"
FRONTEND_LAUNCH_FILE = REPO / "launch" / "frontend.launch.py"
ARGUMENTS = {"camera_topic", "namespace", "params_file", "device", "backend", "lifecycle", "with_matcher",
             "matcher_params_file"}
TINY = {"widths": [4, 4, 8, 8, 8, 8, 16, 16], "descriptor_dim": 16}
# params file -> (module of its node, the node documents all its parameters in the file)
PARAMS_FILES = {
    "detector.yaml": ("usp_ros.detector_node", True),
    "image_source.yaml": ("usp_ros.image_source", True),
    "matcher.yaml": ("usp_ros.matcher_node", False),
}


def calls_named(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keyword(call, name):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def assigned(tree, value):
    """``value``, or for a variable the value assigned to it in ``tree``."""
    if not isinstance(value, ast.Name):
        return value
    (assignment,) = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", None) == value.id]
    return assignment


def test_launch_file_parses_and_declares_its_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    assert any(isinstance(node, ast.FunctionDef) and node.name == "generate_launch_description" for node in tree.body)
    declared = {call.args[0].value for call in calls_named(tree, "DeclareLaunchArgument")}
    assert declared == ARGUMENTS
    nodes = {keyword(call, "executable").value: call
             for call in calls_named(tree, "Node") + calls_named(tree, "LifecycleNode")}
    assert set(nodes) == {"detector_node", "lifecycle_detector_node", "matcher_node"}
    for executable in nodes:
        assert os.access(REPO / "nodes" / executable, os.X_OK), f"nodes/{executable} is not an executable"
    assert "UnlessCondition" in ast.dump(keyword(nodes["detector_node"], "condition"))
    assert nodes["lifecycle_detector_node"].func.id == "LifecycleNode"
    for detector in ("detector_node", "lifecycle_detector_node"):
        assert "'lifecycle'" in ast.dump(assigned(tree, keyword(nodes[detector], "condition").args[0]))
        assert "camera_topic" in ast.dump(assigned(tree, keyword(nodes[detector], "remappings")))
    assert "with_matcher" in ast.dump(keyword(nodes["matcher_node"], "condition"))
    for name in ("detector.yaml", "matcher.yaml", "fastdds_large_images.xml"):
        assert f"'{name}'" in ast.dump(tree) and (REPO / "config" / name).is_file()


def test_both_launch_files_pass_a_backend_argument_to_the_detector():
    detector_tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    (declared,) = [call for call in calls_named(detector_tree, "DeclareLaunchArgument")
                   if call.args[0].value == "backend"]
    assert keyword(declared, "default_value").value == "auto"
    assert [choice.value for choice in keyword(declared, "choices").elts] == list(BACKENDS)
    frontend_tree = ast.parse(FRONTEND_LAUNCH_FILE.read_text(), filename=str(FRONTEND_LAUNCH_FILE))
    (arguments,) = [node.value for node in frontend_tree.body
                    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "ARGUMENTS"]
    assert "backend" in [key.value for key in arguments.keys]
    for tree in (detector_tree, frontend_tree):
        (detector,) = [call for call in calls_named(tree, "Node")
                       if keyword(call, "executable").value == "detector_node"]
        parameters = ast.dump(assigned(tree, keyword(detector, "parameters")))
        assert parameters.count("Constant(value='backend')") == 2, "a 'backend' key holding the backend argument"


def test_rviz_config_shows_the_debug_images():
    config = yaml.safe_load((REPO / "config" / "usp.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {display["Topic"]["Value"] for display in displays if display["Class"] == "rviz_default_plugins/Image"}
    assert topics == {"/features/debug_image", "/matches/debug_image"}


def ros_params_files():
    for path in sorted((REPO / "config").glob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and any(isinstance(v, dict) and "ros__parameters" in v
                                                    for v in content.values()):
            yield path


def test_every_ros_params_file_belongs_to_a_node():
    assert {path.name for path in ros_params_files()} == set(PARAMS_FILES)


@pytest.mark.parametrize("file_name", sorted(PARAMS_FILES))
def test_params_file_parameters_are_declared_by_the_node(file_name, ros_node, spawn, wait, tmp_path):
    module, complete = PARAMS_FILES[file_name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed yet")
    path = REPO / "config" / file_name
    (section,) = yaml.safe_load(path.read_text()).values()
    expected = section["ros__parameters"]
    overrides = {}
    if module == "usp_ros.detector_node":  # no bundled weights yet: a small random model
        overrides["model_path"] = str(save_checkpoint(tmp_path / "tiny.pt", {
            "model": UnsuperPoint(ModelConfig(**TINY)).state_dict(), "config": {"model": TINY}}))
        overrides["backend"] = "torch"  # new random weights each run: no graph export holding up the start
    namespace = f"/params_{path.stem}"
    args = ["-m", module, "--ros-args", "-r", f"__ns:={namespace}", "--params-file", str(path)]
    for name, value in overrides.items():
        args += ["-p", f"{name}:={value}"]
    child = spawn(*args, name="node")
    node_name = {"usp_ros.detector_node": "detector", "usp_ros.image_source": "image_source",
                 "usp_ros.matcher_node": "matcher"}[module]
    client = AsyncParameterClient(ros_node, f"{namespace}/{node_name}")
    assert client.wait_for_services(timeout_sec=30), f"{module} did not come up: {child.poll()}"
    listed = client.list_parameters()
    assert wait(listed.done, timeout=60)  # answered once the node spins, after its constructor (model load)
    declared = set(listed.result().result.names) - {"use_sim_time", "start_type_description_service"}
    assert set(expected) <= declared, f"{file_name} sets parameters the node does not declare: " \
                                      f"{sorted(set(expected) - declared)}"
    if complete:
        assert declared <= set(expected), f"{file_name} does not document {sorted(declared - set(expected))}"
    got = client.get_parameters(sorted(expected))
    assert wait(got.done, timeout=10)
    values = dict(zip(sorted(expected), (parameter_value_to_python(v) for v in got.result().values)))
    assert values == {**expected, **overrides}


def test_launch_description_builds_and_resolves(monkeypatch):
    pytest.importorskip("launch")
    pytest.importorskip("launch_ros")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
    from launch_ros.actions import Node

    spec = importlib.util.spec_from_file_location("detector_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    arguments = {argument.name: argument for argument in description.entities
                 if isinstance(argument, DeclareLaunchArgument)}
    assert set(arguments) == ARGUMENTS
    nodes = [entity for entity in description.entities if isinstance(entity, Node)]
    context = LaunchContext()
    for argument in arguments.values():
        argument.execute(context)
    executables = {perform_substitutions(context, normalize_to_list_of_substitutions(node.node_executable))
                   for node in nodes}
    assert executables == {"detector_node", "lifecycle_detector_node", "matcher_node"}
    params_file = Path(perform_substitutions(context, arguments["params_file"].default_value))
    assert params_file.name == "detector.yaml" and params_file.is_file()
    assert perform_substitutions(context, arguments["device"].default_value) == "auto"
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    (profile,) = [entity for entity in description.entities if isinstance(entity, SetEnvironmentVariable)]
    profile.execute(context)
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_images.xml"
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
