"""QoS profiles of the usp_ros nodes, and input reliability matched to the publishers of a topic.

REP-2003: sensor data in, reliable out. For camera images the reliability must match the
publisher: with Fast DDS defaults a best-effort subscriber receives none of a reliable publisher's
640x480 images (the publisher's shared-memory segment is too small for best-effort samples of that
size), while a reliable subscriber cannot match a best-effort publisher at all. So the default input
QoS, ``auto``, looks at the publishers on the topic (as image_pipeline does): all reliable ->
reliable, any best-effort -> best-effort, none yet -> best-effort until one appears.

The decision logic is pure (plain values in, a policy out) so it is tested without DDS.
"""
from __future__ import annotations

from typing import Iterable

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["INPUT_QOS_CHOICES", "IMAGE_DEPTH", "OUTPUT_DEPTH", "reliability_from_name", "reliability_name",
           "input_qos", "output_qos", "reliability_from_publishers", "choose_input_reliability",
           "publisher_reliabilities"]

INPUT_QOS_CHOICES = ("auto", "reliable", "best_effort")
IMAGE_DEPTH = 1  # images in: only the newest matters, the node drops older frames anyway
OUTPUT_DEPTH = 10  # features and debug images out: a short reliable history for slow subscribers

_BY_NAME = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}


def reliability_from_name(name: str) -> ReliabilityPolicy:
    """"reliable" or "best_effort" -> the rclpy policy; ValueError for anything else."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"reliability must be 'reliable' or 'best_effort', got {name!r}") from None


def reliability_name(policy: ReliabilityPolicy) -> str:
    """The rclpy policy -> "reliable" / "best_effort" (other policies by their enum name, lower case)."""
    for name, known in _BY_NAME.items():
        if policy == known:
            return name
    return policy.name.lower()


def input_qos(reliability: ReliabilityPolicy, depth: int = IMAGE_DEPTH) -> QoSProfile:
    """Profile for subscribing to images: keep-last ``depth``, volatile, the given reliability."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos(reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE, depth: int = OUTPUT_DEPTH) -> QoSProfile:
    """Profile for what our nodes publish: reliable keep-last ``depth`` (matches subscribers of any reliability)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def reliability_from_publishers(policies: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy | None:
    """The reliability that receives from every given publisher: None when there are none.

    All reliable -> RELIABLE (a best-effort subscriber may lose large samples of a reliable
    publisher); any best-effort -> BEST_EFFORT (a reliable subscriber never matches it).
    """
    policies = list(policies)
    if not policies:
        return None
    if all(policy == ReliabilityPolicy.RELIABLE for policy in policies):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def choose_input_reliability(setting: str, publishers: Iterable[ReliabilityPolicy]) -> tuple[ReliabilityPolicy, bool]:
    """The input reliability for an ``input_qos`` setting and the publishers seen on the topic.

    Returns (policy, settled): ``settled`` is False only for ``auto`` with no publisher yet, when the
    policy is the best-effort fallback and the choice should be made again once a publisher appears.
    """
    if setting not in INPUT_QOS_CHOICES:
        raise ValueError(f"input QoS must be one of {', '.join(INPUT_QOS_CHOICES)}, got {setting!r}")
    if setting != "auto":
        return reliability_from_name(setting), True
    matched = reliability_from_publishers(publishers)
    if matched is None:
        return ReliabilityPolicy.BEST_EFFORT, False
    return matched, True


def publisher_reliabilities(node, topic: str) -> list[ReliabilityPolicy]:
    """Reliability of each publisher on ``topic`` (relative names resolved with the node's namespace and remaps)."""
    resolved = node.resolve_topic_name(topic)
    return [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(resolved)]
