"""launch/detector.launch.py and launch/frontend.launch.py, config/*.yaml and config/usp.rviz.

Without `launch` (not installable here), from the source: the launch files parse and declare their
arguments, each Node's namespace, remappings, parameters and condition read the launch arguments of the
table USES, and each parameter set from an argument is the parameter of that name; every parameter of
each node's params file is declared by that node (started with the file, read back through its
parameter services). With `launch` and `launch_ros`: each description is resolved for a few argument
sets as `ros2 launch` would, without starting anything, and each started node's namespace, remappings
and parameters are those the arguments ask for (the table RESOLVED).
"""
import ast
import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient

from usp_core.inference.backends.base import BACKENDS

from .conftest import service_answer

REPO = Path(__file__).resolve().parents[2]
LAUNCH_FILE = REPO / "launch" / "detector.launch.py"
FRONTEND_LAUNCH_FILE = REPO / "launch" / "frontend.launch.py"
ARGUMENTS = {"camera_topic", "namespace", "params_file", "device", "backend", "precision", "lifecycle",
             "with_matcher", "matcher_params_file"}
FRONTEND_ARGUMENTS = {"camera_topic", "namespace", "device", "model_path", "backend", "precision", "keyframe_mode",
                      "use_virtual_camera"}
# params file -> (module of its node, the node documents all its parameters in the file)
PARAMS_FILES = {
    "detector.yaml": ("usp_ros.nodes.detector", True),
    "image_source.yaml": ("usp_ros.nodes.image_source", True),
    "matcher.yaml": ("usp_ros.nodes.matcher", False),
}


def _uses(namespace=("namespace",), remappings=("camera_topic",), parameters=(), condition=()) -> dict:
    return {"namespace": set(namespace), "remappings": set(remappings), "parameters": set(parameters),
            "condition": set(condition)}


_DETECTOR_USES = _uses(parameters=("params_file", "device", "backend", "precision"), condition=("lifecycle",))
# launch file -> executable -> keyword of its Node call -> the launch arguments that keyword reads
USES = {
    LAUNCH_FILE: {
        "detector_node": _DETECTOR_USES,
        "lifecycle_detector_node": _DETECTOR_USES,
        "matcher_node": _uses(parameters=("matcher_params_file", "device"), condition=("with_matcher",)),
    },
    FRONTEND_LAUNCH_FILE: {
        "detector_node": _uses(parameters=("device", "model_path", "backend", "precision")),
        "matcher_node": _uses(parameters=("device", "keyframe_mode")),
        "image_source": _uses(condition=("use_virtual_camera",)),
    },
}
_ROBOT = {"camera_topic": "/cam/image", "device": "cpu", "namespace": "robot"}
_DETECTOR_REMAPPINGS = [("image", "image"), ("image/compressed", "image/compressed")]
_DEFAULT_DETECTOR = ("/", _DETECTOR_REMAPPINGS,
                     ["detector.yaml", {"device": "auto", "backend": "auto", "precision": "auto"}])
# (launch file, arguments) -> executable of each node started -> (namespace, remappings, parameters: the file
# name of each params file, the values of each dict, in order)
RESOLVED = [
    (LAUNCH_FILE, {}, {"detector_node": _DEFAULT_DETECTOR}),
    (LAUNCH_FILE, {**_ROBOT, "with_matcher": "true"}, {
        "detector_node": ("/robot", [("image", "/cam/image"), ("image/compressed", "/cam/image/compressed")],
                          ["detector.yaml", {"device": "cpu", "backend": "auto", "precision": "auto"}]),
        "matcher_node": ("/robot", [("image", "/cam/image")], ["matcher.yaml", {"device": "cpu"}])}),
    (LAUNCH_FILE, {"lifecycle": "true"}, {"lifecycle_detector_node": _DEFAULT_DETECTOR}),
    (LAUNCH_FILE, {"lifecycle": "true", "with_matcher": "true", "backend": "onnxruntime"}, {
        "lifecycle_detector_node": ("/", _DETECTOR_REMAPPINGS,
                                    ["detector.yaml",
                                     {"device": "auto", "backend": "onnxruntime", "precision": "auto"}]),
        "matcher_node": ("/", [("image", "image")], ["matcher.yaml", {"device": "auto"}])}),
    (FRONTEND_LAUNCH_FILE, {}, {
        "detector_node": ("/", [("image", "image")],
                          ["detector.yaml",
                           {"device": "auto", "model_path": "", "backend": "auto", "precision": "auto"}]),
        "matcher_node": ("/", [("image", "image")], ["matcher.yaml", {"device": "auto", "keyframe_mode": False}])}),
    (FRONTEND_LAUNCH_FILE, {**_ROBOT, "use_virtual_camera": "true", "keyframe_mode": "true",
                            "model_path": "/models/usp.pt", "backend": "torch", "precision": "fp32"}, {
        "detector_node": ("/robot", [("image", "/cam/image")],
                          ["detector.yaml", {"device": "cpu", "model_path": "/models/usp.pt", "backend": "torch",
                                           "precision": "fp32"}]),
        "matcher_node": ("/robot", [("image", "/cam/image")],
                         ["matcher.yaml", {"device": "cpu", "keyframe_mode": True}]),
        "image_source": ("/robot", [("image", "/cam/image")], ["image_source.yaml", {"source": "virtual"}])}),
]


def calls_named(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keyword(call, name):
    return next((kw.value for kw in call.keywords if kw.arg == name), None)


def assignments(tree) -> dict[str, list]:
    """Variable name -> the values assigned to it anywhere in ``tree``."""
    values = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            values.setdefault(node.targets[0].id, []).append(node.value)
    return values


def reachable(tree, expression, seen=()):
    """Every AST node of ``expression`` and, for each variable it reads, of the values assigned to it."""
    if expression is None:
        return
    for node in ast.walk(expression):
        yield node
        if isinstance(node, ast.Name) and node.id not in seen:
            for value in assignments(tree).get(node.id, ()):
                yield from reachable(tree, value, (*seen, node.id))


def launch_arguments(tree, expression) -> set[str]:
    """Names of the launch arguments ``expression`` reads: LaunchConfiguration("name") or an alias of it."""
    aliases = {"LaunchConfiguration"} | {name for name, values in assignments(tree).items()
                                         if any(getattr(v, "id", None) == "LaunchConfiguration" for v in values)}
    return {node.args[0].value for node in reachable(tree, expression)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in aliases
            and node.args and isinstance(node.args[0], ast.Constant)}


def node_calls(tree) -> dict:
    """Executable -> its Node or LifecycleNode call."""
    calls = calls_named(tree, "Node") + calls_named(tree, "LifecycleNode")
    return {keyword(call, "executable").value: call for call in calls}


def declared_arguments(tree) -> set[str]:
    """DeclareLaunchArgument("name", ...) calls, and the keys of a module-level ARGUMENTS table they loop over."""
    declared = {call.args[0].value for call in calls_named(tree, "DeclareLaunchArgument")
                if isinstance(call.args[0], ast.Constant)}
    return declared | {key.value for value in assignments(tree).get("ARGUMENTS", ()) for key in value.keys}


def parse(path: Path):
    return ast.parse(path.read_text(), filename=str(path))


def test_launch_file_parses_and_declares_its_arguments():
    tree = parse(LAUNCH_FILE)
    assert any(isinstance(node, ast.FunctionDef) and node.name == "generate_launch_description" for node in tree.body)
    assert declared_arguments(tree) == ARGUMENTS
    nodes = node_calls(tree)
    assert set(nodes) == set(USES[LAUNCH_FILE])
    assert "UnlessCondition" in ast.dump(keyword(nodes["detector_node"], "condition"))
    assert "IfCondition" in ast.dump(keyword(nodes["lifecycle_detector_node"], "condition"))
    assert nodes["lifecycle_detector_node"].func.id == "LifecycleNode"
    for name in ("detector.yaml", "matcher.yaml", "fastdds_large_images.xml"):
        assert f"'{name}'" in ast.dump(tree) and (REPO / "config" / name).is_file()


@pytest.mark.parametrize("path, executable", [(path, name) for path, nodes in USES.items() for name in nodes],
                         ids=lambda value: getattr(value, "name", value))
def test_launch_arguments_reach_the_nodes(path, executable):
    """Without `launch`: which arguments each Node call reads (so the matcher of detector.launch.py gets
    camera_topic as its image, and device), and that a parameter set from an argument is the one of its name."""
    tree = parse(path)
    call = node_calls(tree)[executable]
    assert os.access(REPO / "nodes" / executable, os.X_OK), f"nodes/{executable} is not an executable"
    uses = {name: launch_arguments(tree, keyword(call, name)) for name in USES[path][executable]}
    assert uses == USES[path][executable]
    remapped = {node.value for node in reachable(tree, keyword(call, "remappings")) if isinstance(node, ast.Constant)}
    assert "image" in remapped, "the node's relative `image` is what is remapped"
    dicts = [node for node in reachable(tree, keyword(call, "parameters")) if isinstance(node, ast.Dict)]
    for parameters in dicts:
        for key, value in zip(parameters.keys, parameters.values):
            assert launch_arguments(tree, value) in (set(), {key.value}), f"parameter {key.value} of {executable}"


@pytest.mark.parametrize("path", list(USES), ids=lambda path: path.name)
def test_every_launch_argument_reaches_a_node(path):
    tree = parse(path)
    used = set().union(*(launch_arguments(tree, call) for call in node_calls(tree).values()))
    assert used == declared_arguments(tree) == (ARGUMENTS if path == LAUNCH_FILE else FRONTEND_ARGUMENTS)


def test_backend_argument_offers_every_backend():
    (declared,) = [call for call in calls_named(parse(LAUNCH_FILE), "DeclareLaunchArgument")
                   if call.args[0].value == "backend"]
    assert keyword(declared, "default_value").value == "auto"
    assert [choice.value for choice in keyword(declared, "choices").elts] == list(BACKENDS)


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
def test_params_file_parameters_are_declared_by_the_node(file_name, ros_node, spawn, tiny_model):
    module, complete = PARAMS_FILES[file_name]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed yet")
    path = REPO / "config" / file_name
    (section,) = yaml.safe_load(path.read_text()).values()
    expected = section["ros__parameters"]
    overrides = {}
    if module == "usp_ros.nodes.detector":  # no bundled weights yet: a small random model
        overrides["model_path"] = str(tiny_model)
        overrides["backend"] = "torch"  # new random weights each run: no graph export holding up the start
    namespace = f"/params_{path.stem}"
    args = ["-m", module, "--ros-args", "-r", f"__ns:={namespace}", "--params-file", str(path)]
    for name, value in overrides.items():
        args += ["-p", f"{name}:={value}"]
    child = spawn(*args, name="node")
    node_name = {"usp_ros.nodes.detector": "detector", "usp_ros.nodes.image_source": "image_source",
                 "usp_ros.nodes.matcher": "matcher"}[module]
    client = AsyncParameterClient(ros_node, f"{namespace}/{node_name}")
    assert client.wait_for_services(timeout_sec=30), f"{module} did not come up: {child.poll()}"
    listed = service_answer(client.list_parameters)  # answered once the node spins, after its constructor
    declared = set(listed.result.names) - {"use_sim_time", "start_type_description_service"}
    assert set(expected) <= declared, f"{file_name} sets parameters the node does not declare: " \
                                      f"{sorted(set(expected) - declared)}"
    if complete:
        assert declared <= set(expected), f"{file_name} does not document {sorted(declared - set(expected))}"
    got = service_answer(lambda: client.get_parameters(sorted(expected)))
    values = dict(zip(sorted(expected), (parameter_value_to_python(v) for v in got.values)))
    assert values == {**expected, **overrides}


def load_launch_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_api():
    pytest.importorskip("launch", reason="launch is not installed (ROS 2's, not PyPI's)")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed")
    import launch
    import launch_ros
    if not hasattr(launch, "LaunchContext") or not hasattr(launch_ros, "actions"):
        pytest.skip("the installed `launch` is not ROS 2's")
    return launch, launch_ros


def launch_context(description, arguments: dict):
    """A LaunchContext holding ``arguments`` and the defaults of the other declared arguments (choices checked)."""
    launch, _ = launch_api()
    from launch.actions import DeclareLaunchArgument

    context = launch.LaunchContext()
    context.launch_configurations.update(arguments)
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
    return context


def started_nodes(path: Path, arguments: dict) -> dict:
    """Executable -> Node, for each Node whose condition holds, its substitutions performed as `ros2 launch`
    does before starting it (nothing is started)."""
    _, launch_ros = launch_api()
    from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions

    description = load_launch_module(path).generate_launch_description()
    context = launch_context(description, arguments)
    started = {}
    for entity in description.entities:
        if isinstance(entity, launch_ros.actions.Node) and (entity.condition is None
                                                             or entity.condition.evaluate(context)):
            entity._perform_substitutions(context)
            executable = perform_substitutions(context, normalize_to_list_of_substitutions(entity.node_executable))
            assert executable not in started
            started[executable] = entity
    return started


def expanded_parameters(node) -> list:
    """A resolved Node's parameters in order: the file name of each params file of the package's config/, the
    values of each dict (launch_ros writes a dict to a temporary params file for the node alone)."""
    parameters = []
    for argument, is_file in node._Node__expanded_parameter_arguments:
        assert is_file, f"a single -p {argument}"
        path = Path(argument)
        if path.parent.name == "config":
            assert path.is_file()
            parameters.append(path.name)
            continue
        (section,) = yaml.safe_load(path.read_text()).items()
        assert section[0] == node.node_name, "the values apply to this node alone"
        parameters.append(section[1]["ros__parameters"])
    return parameters


@pytest.mark.parametrize("path, arguments, expected", RESOLVED,
                         ids=[f"{path.name}:{' '.join(f'{k}:={v}' for k, v in arguments.items()) or 'defaults'}"
                              for path, arguments, _ in RESOLVED])
def test_launch_description_resolves_to_the_nodes_the_arguments_ask_for(path, arguments, expected, monkeypatch,
                                                                        tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the parameter files launch_ros writes
    started = started_nodes(path, arguments)
    assert set(started) == set(expected)
    for executable, (namespace, remappings, parameters) in expected.items():
        node = started[executable]
        assert node.expanded_node_namespace == namespace, executable
        assert node.expanded_remapping_rules == remappings, executable
        assert expanded_parameters(node) == parameters, executable


@pytest.mark.parametrize("path", [LAUNCH_FILE, FRONTEND_LAUNCH_FILE], ids=lambda path: path.name)
def test_launch_description_sets_the_fastdds_profile_unless_set(path, monkeypatch):
    launch_api()
    from launch.actions import SetEnvironmentVariable

    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    description = load_launch_module(path).generate_launch_description()
    context = launch_context(description, {})
    (profile,) = [entity for entity in description.entities if isinstance(entity, SetEnvironmentVariable)]
    profile.execute(context)
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_images.xml"
    assert Path(os.environ["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/somewhere/mine.xml")
    profile.execute(context)
    assert os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] == "/somewhere/mine.xml"
