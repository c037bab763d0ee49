"""The one epsilon codec: values, path tokens, command-line text, display text, equality, seeding keys."""

import pytest

from medgrid import epsilon
from medgrid.errors import UserError


@pytest.mark.parametrize("written,value", [
    ("2/255", 2 / 255), ("2o255", 2 / 255), (" 8 / 255 ", 8 / 255), (0.5, 0.5), ("0.50", 0.5), ("1e-3", 1e-3),
    (0, 0.0), ("0", 0.0), (2 / 255, 2 / 255),
])
def test_parse(written, value):
    assert epsilon.parse(written) == value  # exact: read as a fraction, rounded once


@pytest.mark.parametrize("bad", ["-0.5", "two", "inf", "nan", "1/0", "2/255/3", "", "1/-2"])
def test_parse_refuses(bad):
    with pytest.raises(UserError, match="bad epsilon"):
        epsilon.parse(bad)


@pytest.mark.parametrize("norm,written,token,arg,text", [
    ("none", 0, "0", "0", "0"),
    ("linf", "2/255", "2o255", "2/255", "2/255"),
    ("linf", 8 / 255, "8o255", "8/255", "8/255"),
    ("linf", 0.01, "0.01", "0.01", "0.01"),
    ("l2", 0.5, "0.5", "0.5", "0.5"),
    ("l2", "0.50", "0.5", "0.5", "0.5"),
    ("l2", 1.0, "1", "1", "1"),
    ("l2", "2/255", "0.00784313725490196", "0.00784313725490196", "0.00784314"),  # grey levels: L-inf only
])
def test_token_arg_text(norm, written, token, arg, text):
    assert epsilon.token(norm, written) == token
    assert epsilon.arg(norm, written) == arg
    assert epsilon.text(norm, epsilon.parse(written)) == text
    # every spelling reads back to the same value
    assert epsilon.parse(token) == epsilon.parse(arg) == epsilon.parse(written)
    assert epsilon.token(norm, token) == epsilon.token(norm, arg) == token


def test_one_tolerance():
    assert epsilon.same(2 / 255, float(epsilon.parse("2/255")))
    assert epsilon.same(0.5, 0.5 + 1e-12) and not epsilon.same(0.5, 0.5 + 1e-6)
    assert epsilon.same(8.0, 8.0 + 5e-9) and not epsilon.same(8.0, 8.0 + 1e-7)  # relative above 1
    assert epsilon.find(0.5 + 1e-12, [0.25, 0.5]) == 0.5 and epsilon.find(0.3, [0.25, 0.5]) is None
    # a token decided by the same tolerance: 2/255 written with 13 digits is 2/255
    assert epsilon.token("linf", "0.0078431372549") == "2o255"
    assert epsilon.token("linf", "0.00784313") == "0.00784313"


def test_keys_are_stable():
    """Random streams are named by these integers: a change would change every random start."""
    assert epsilon.key(2 / 255) == 7843137 and epsilon.key(0.5) == 500000000 and epsilon.key(0) == 0
