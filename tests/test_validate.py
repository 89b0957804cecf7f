"""The argument checks of :mod:`pyomni.validate`, kind by kind: what passes (normalised), what is refused (the
error class and ``field``), and messages that never echo more than a bounded prefix of the input."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pyomni import errors, validate
from pyomni.model import Fulfilment, ReservationState

HUGE = "x" * 16_384
#: values no argument kind accepts but its own (each test adds the right ones back)
ODD = [None, True, b"x", [], (), {}, object(), HUGE, "a\x00b", 1.5, math.nan, np.array([1, 2])]


def short(value):
    return validate.shown(value, 24)


def refused(cls, field, call, *args, **kwargs):
    with pytest.raises(errors.PyomniError) as info:
        call(*args, **kwargs)
    assert type(info.value) is cls, info.value
    assert info.value.field == field
    assert len(str(info.value)) <= 400
    return info.value


# -- shown -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [HUGE, list(range(100_000)), 10**5000, {i: HUGE for i in range(50)},
                                   np.arange(10**6), b"\xff" * 10_000, -(10**400)], ids=short)
def test_shown_is_bounded_for_anything(value):
    text = validate.shown(value)
    assert len(text) <= validate.SHOWN_CHARS


def test_shown_survives_a_repr_that_raises():
    class Bad:
        def __repr__(self):
            raise RuntimeError("no")
    assert validate.shown(Bad()).startswith("<Bad")


def test_shown_keeps_short_values_whole():
    assert validate.shown("SH-0001") == "'SH-0001'" and validate.shown(5) == "5"
    assert "..." in validate.shown(HUGE) and validate.shown(HUGE).startswith("'xxx")


# -- identifiers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["SKU-1", "上海-01", "a b", "x" * validate.MAX_ID_CHARS, "Ω≈ç√", "🛒"], ids=short)
def test_identifiers_pass(value):
    assert validate.identifier(value, "sku") == value
    assert validate.is_identifier(value)
    assert validate.are_identifiers([value, "ok"])


@pytest.mark.parametrize("value", ["", "x" * (validate.MAX_ID_CHARS + 1), "a\x00b", "tab\t", "new\nline", "\x7f",
                                   "\x9b", "\ud800", "a\udfffb", None, 5, b"SKU", ["SKU"], np.str_("")], ids=short)
def test_identifiers_refused(value):
    refused(errors.InvalidArgument, "sku", validate.identifier, value, "sku")
    assert not validate.is_identifier(value)
    assert not validate.are_identifiers(["ok", value])


def test_identifier_error_class_and_length_are_the_callers():
    refused(errors.InvalidOrder, "id", validate.identifier, "", "id", error=errors.InvalidOrder)
    refused(errors.InvalidArgument, "id", validate.identifier, "x" * 129, "id", max_chars=128)


def test_a_numpy_string_becomes_a_plain_one():
    assert type(validate.identifier(np.str_("SKU-1"), "sku")) is str


def test_are_identifiers_skips_only_none_and_empty():
    assert validate.are_identifiers(["a", None, "", "b"], skip_empty=True)
    for bad in (0, False, [], np.array([1, 2]), "a\x00"):
        assert not validate.are_identifiers(["a", bad], skip_empty=True), bad
    assert validate.are_identifiers(["x" * 300], None) and not validate.are_identifiers(["x" * 300])


def test_request_ids():
    assert validate.request_id(None) is None and validate.request_id("rq-1") == "rq-1"
    for bad in ("", 5, "a\x00", "\ud800", "x" * 257, ["rq"]):
        refused(errors.InvalidArgument, "request_id", validate.request_id, bad)


def test_free_text_may_be_empty_or_hold_newlines_but_not_surrogates():
    assert validate.text("", "title") == "" and validate.text("line 1\nline 2", "title")
    refused(errors.InvalidArgument, "title", validate.text, "\ud800", "title")
    refused(errors.InvalidArgument, "title", validate.text, "x" * 5000, "title")
    refused(errors.InvalidArgument, "title", validate.text, 5, "title")


# -- scalars --------------------------------------------------------------------------------------
def test_flags():
    assert validate.flag(True, "f") is True and validate.flag(np.bool_(False), "f") is False
    for bad in (1, 0, "yes", "false", None, 1.0, np.int64(1)):
        refused(errors.InvalidArgument, "f", validate.flag, bad, "f")


def test_integers():
    assert validate.integer(np.int64(7), "n", low=0) == 7 and type(validate.integer(np.int64(7), "n")) is int
    for bad in (True, np.bool_(True), 1.0, "1", None, Decimal(1), Fraction(1), [1], complex(1, 0)):
        refused(errors.InvalidArgument, "n", validate.integer, bad, "n")
    refused(errors.InvalidArgument, "n", validate.integer, -1, "n", low=0)
    refused(errors.InvalidArgument, "n", validate.integer, 10**5000, "n", high=10)    # message bounded


def test_quantities():
    assert validate.quantity(np.uint8(3), "qty") == 3
    assert validate.quantity(0, "qty", allow_zero=True) == 0
    assert validate.quantity(-validate.MAX_QTY, "delta", allow_negative=True) == -validate.MAX_QTY
    for bad in (0, -1, validate.MAX_QTY + 1, 2**64, 10**5000, True, 2.0, "3", None, np.float64(1)):
        refused(errors.InvalidQuantity, "qty", validate.quantity, bad, "qty")
    refused(errors.InvalidQuantity, "delta", validate.quantity, 0, "delta", allow_negative=True)


def test_numbers():
    assert validate.number(np.float32(1.5), "r") == 1.5 and type(validate.number(2, "r")) is float
    assert validate.number(math.inf, "km", allow_inf=True) == math.inf
    for bad in (math.nan, math.inf, -math.inf, True, "1", None, Decimal("1"), complex(1, 1), 10**400):
        refused(errors.InvalidArgument, "r", validate.number, bad, "r")
    refused(errors.InvalidArgument, "r", validate.number, 0, "r", low=0, low_open=True)
    refused(errors.InvalidArgument, "r", validate.number, 1.0, "r", high=1.0, high_open=True)
    assert validate.seconds(0.5, "ttl") == 0.5
    for bad in (0, -1, math.nan, math.inf):
        refused(errors.InvalidArgument, "ttl", validate.seconds, bad, "ttl")


def test_timeouts_are_bounded_by_what_threading_can_wait():
    assert validate.timeout(None) is None and validate.timeout(0) == 0.0
    for bad in (-1, math.nan, math.inf, 1e300, validate.MAX_TIMEOUT * 2, "1", True):
        refused(errors.InvalidArgument, "timeout", validate.timeout, bad)


def test_points():
    assert validate.point((31.2, 121.5)) == (31.2, 121.5)
    assert validate.point(np.array([31.2, 121.5])) == (31.2, 121.5)
    assert validate.point([np.float32(1), 2]) == (1.0, 2.0)
    for bad in [(math.nan, 0), (0, math.inf), (91, 0), (0, -181), ("31", "121"), (True, 0), (31.2,),
                (1, 2, 3), "31,121", None, 5, {1: 2}, np.zeros((2, 2)), (10**400, 0)]:
        refused(errors.InvalidCoordinates, "near", validate.point, bad)


# -- choices and collections --------------------------------------------------------------------------
def test_members():
    held = ReservationState.HELD
    assert validate.member(held, "state", ReservationState) is held
    assert validate.member("held", "state", ReservationState, by_name=True) is held
    assert validate.member("same-day", "f", Fulfilment, by_name=True) is Fulfilment.SAME_DAY
    assert validate.member(2, "f", Fulfilment, by_value=True) is Fulfilment.PICKUP
    error = refused(errors.InvalidArgument, "state", validate.member, "HELD", "state", ReservationState)
    assert "HELD, CONFIRMED" in str(error)                # the valid names are listed
    for bad in (True, 9, "teleport", HUGE, None, 1.0):
        refused(errors.InvalidArgument, "f", validate.member, bad, "f", Fulfilment, by_name=True, by_value=True)


def test_choices():
    assert validate.choice("network", "scope", ("network", "location")) == "network"
    for bad in ("NETWORK", None, 1, HUGE):
        refused(errors.InvalidArgument, "scope", validate.choice, bad, "scope", ("network", "location"))


def test_sequences_refuse_a_bare_string():
    assert validate.sequence(["a"], "skus") == ["a"]
    assert validate.sequence(iter(["a", "b"]), "skus") == ("a", "b")
    assert validate.sequence(range(2), "skus") == range(2)
    for bad in ("ab", b"ab", 5, None, {"a": 1}, np.zeros((2, 2)), 1.5):
        refused(errors.InvalidArgument, "skus", validate.sequence, bad, "skus")
    refused(errors.InvalidArgument, "skus", validate.sequence, [1, 2, 3], "skus", max_len=2)

    def broken():
        yield "a"
        raise RuntimeError("half way")
    refused(errors.InvalidArgument, "skus", validate.sequence, broken(), "skus")


def test_sequences_of_identifiers_name_the_entry():
    assert validate.identifiers(("a", "b"), "skus") == ("a", "b")
    refused(errors.InvalidArgument, "skus[1]", validate.identifiers, ["a", ""], "skus")
    refused(errors.InvalidArgument, "skus", validate.identifiers, "ab", "skus")


def test_paths(tmp_path):
    assert validate.path(tmp_path, "directory") == tmp_path
    assert validate.path(str(tmp_path), "directory") == Path(tmp_path)
    for bad in ("", "a\x00b", "x" * 5000, 5, None, b"/tmp", ["/tmp"]):
        refused(errors.InvalidArgument, "directory", validate.path, bad, "directory")


def test_instances_mappings_and_callables():
    assert validate.instance(3, int, "n", "an int") == 3
    refused(errors.InvalidArgument, "n", validate.instance, "3", int, "n", "an int")
    assert dict(validate.mapping(None, "channels")) == {}
    refused(errors.InvalidArgument, "channels", validate.mapping, "tmall", "channels")
    assert validate.callable_(len, "clock") is len
    refused(errors.InvalidArgument, "clock", validate.callable_, 5, "clock")


@pytest.mark.parametrize("value", ODD, ids=short)
def test_no_check_raises_anything_but_a_typed_error(value):
    # every function, any odd value: a PyomniError or an answer, never a bare exception
    checks = [lambda v: validate.identifier(v, "f"), lambda v: validate.request_id(v), lambda v: validate.text(v, "f"),
              lambda v: validate.flag(v, "f"), lambda v: validate.integer(v, "f"), lambda v: validate.quantity(v, "f"),
              lambda v: validate.number(v, "f"), lambda v: validate.seconds(v, "f"), lambda v: validate.timeout(v),
              lambda v: validate.point(v), lambda v: validate.lat_lon(v, v),
              lambda v: validate.member(v, "f", Fulfilment, by_name=True, by_value=True),
              lambda v: validate.choice(v, "f", ("a",)), lambda v: validate.sequence(v, "f"),
              lambda v: validate.identifiers(v, "f"), lambda v: validate.path(v, "f"),
              lambda v: validate.mapping(v, "f"), lambda v: validate.callable_(v, "f"),
              lambda v: validate.is_identifier(v), lambda v: validate.are_identifiers([v]),
              lambda v: validate.are_identifiers([v], skip_empty=True)]
    for check in checks:
        try:
            check(value)
        except errors.PyomniError as exc:
            assert len(str(exc)) <= 400
