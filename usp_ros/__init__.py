"""usp_ros: the ROS 2 side of the UnsuperPoint/SuperPoint keypoint detectors.

Subpackages by role: ``nodes`` (the rclpy nodes), ``bridge`` (ROS messages <-> numpy), ``support``
(what the nodes share: parameters, start-up, diagnostics, QoS, stamps) and ``tools`` (the front-end
runner, bag processing, benchmarks). The algorithms themselves live in usp_core, which has no ROS.

rosidl generates ``usp_ros.msg`` into the installed package. The package path is extended over every
``usp_ros`` folder on sys.path, so that this source folder, when it comes first (Python started in
the repository root), still finds the generated messages in the install space.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
