"""Benchmark of message conversions: `python -m usp_ros.tools.bench_messages`.

Prints, for 1000 keypoints x 256 floats, the time to fill and serialize a Features message and to
deserialize it back into numpy, beside the one-message-per-keypoint layout built from the same
arrays (std_msgs Float32MultiArray per descriptor, the naive design), and the Image -> numpy time
for a 640x480 bgr8 image beside a copying conversion. Medians over repeated runs.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Float32MultiArray, Header

from usp_core.inference.features import Features
from usp_ros.bridge.images import image_to_numpy, numpy_to_image
from usp_ros.bridge.messages import features_to_msg, msg_to_features
from usp_ros.msg import Features as FeaturesMsg


def median_ms(function, repeats: int) -> float:
    """Median wall time of ``function()`` in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def bench_features(count: int, dim: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    features = Features(rng.random((count, 2), dtype=np.float32) * 640, rng.random(count, dtype=np.float32),
                        rng.standard_normal((count, dim)).astype(np.float32), (640, 480))
    header = Header(frame_id="camera")
    payload = serialize_message(features_to_msg(header, features))

    def per_keypoint_messages():
        return [serialize_message(Float32MultiArray(data=row.tolist())) for row in features.descriptors]

    def deserialize():
        return msg_to_features(deserialize_message(payload, FeaturesMsg)).descriptors.sum()

    return {
        "fill + serialize": median_ms(lambda: serialize_message(features_to_msg(header, features)), repeats),
        "deserialize -> numpy": median_ms(deserialize, repeats),
        "baseline: one message per descriptor, serialize": median_ms(per_keypoint_messages, max(3, repeats // 10)),
    }


def bench_image(repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    msg = numpy_to_image(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), "bgr8")

    def copying_conversion():
        return np.array(msg.data, dtype=np.uint8).reshape(480, 640, 3)

    return {
        "Image -> numpy (640x480 bgr8)": median_ms(lambda: image_to_numpy(msg), repeats),
        "baseline: np.array(msg.data) copy": median_ms(copying_conversion, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keypoints", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    results = {**bench_features(args.keypoints, args.dim, args.repeats), **bench_image(args.repeats)}
    print(f"Features: {args.keypoints} keypoints x {args.dim} floats; medians of {args.repeats} runs")
    for name, value in results.items():
        print(f"  {name:<52} {value:9.3f} ms")
    naive = results["baseline: one message per descriptor, serialize"]
    print(f"  flat arrays are {naive / results['fill + serialize']:.0f}x faster than one message per descriptor")
    copy = results["baseline: np.array(msg.data) copy"]
    print(f"  zero-copy Image view is {copy / results['Image -> numpy (640x480 bgr8)']:.0f}x faster than a copy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
