"""ParameterDescriptor construction shared by the nodes."""
from usp_ros.parameters import describe


def test_ranges_choices_and_read_only():
    plain = describe("a flag")
    assert plain.description == "a flag" and not plain.read_only
    assert not plain.integer_range and not plain.floating_point_range
    stepped = describe("width", read_only=True, integer_range=(0, 64, 8))
    assert stepped.read_only
    assert (stepped.integer_range[0].from_value, stepped.integer_range[0].to_value, stepped.integer_range[0].step) \
        == (0, 64, 8)
    assert describe("count", integer_range=(1, 10)).integer_range[0].step == 1
    ratio = describe("ratio", float_range=(0.0, 1.0)).floating_point_range[0]
    assert (ratio.from_value, ratio.to_value, ratio.step) == (0.0, 1.0, 0.0)
    chosen = describe("how", choices=("ransac", "magsac"))
    assert chosen.description == "how [ransac|magsac]"
    assert chosen.additional_constraints == "one of: ransac, magsac"
