"""The error hierarchy and the one native-status choke point (``pyomni._core.check_status``)."""

from __future__ import annotations

import pickle

import pytest

from pyomni import errors
from pyomni._core import STATUS_ERRORS, STATUS_OK, check_status

#: Every non-OK code of ``core/status.pxd`` (ST_INVALID_QUANTITY .. ST_CUSTOMER_LIMIT).
NATIVE_STATUS_CODES = range(1, 12)

GROUPS = {
    errors.InvalidArgument: ValueError,
    errors.NotFound: LookupError,
    errors.FailedPrecondition: RuntimeError,
}


def test_status_ok_is_zero():
    assert STATUS_OK == 0


def test_status_mapping_is_total_over_native_codes():
    assert set(STATUS_ERRORS) == set(NATIVE_STATUS_CODES)


def test_status_mapping_is_one_to_one():
    classes = list(STATUS_ERRORS.values())
    assert len(set(classes)) == len(classes)


def test_status_mapping_targets_are_public_error_classes():
    for code, cls in STATUS_ERRORS.items():
        assert cls in errors.ALL_ERRORS, code
        assert issubclass(cls, errors.PyomniError)


@pytest.mark.parametrize(("code", "cls"), [
    (1, errors.InvalidQuantity),
    (2, errors.InsufficientStock),
    (3, errors.StockReserved),
    (4, errors.QuantityOverflow),
    (5, errors.UnknownLocation),
    (6, errors.UnknownSku),
    (7, errors.OutOfMemory),
    (8, errors.InvariantViolation),
    (9, errors.SoldOut),
    (10, errors.StoreQuotaExhausted),
    (11, errors.CustomerLimitReached),
])
def test_status_codes_match_the_native_enum(code, cls):
    # the numbers cross the module boundary and must never be renumbered (core/status.pxd)
    assert STATUS_ERRORS[code] is cls


def test_every_error_class_has_a_unique_reason():
    reasons = [cls.reason for cls in errors.ALL_ERRORS]
    assert len(set(reasons)) == len(reasons)
    for cls in errors.ALL_ERRORS:
        assert isinstance(cls.reason, str) and cls.reason
        assert cls.reason == cls.reason.upper()
        # each class declares its own reason rather than inheriting its parent's
        assert "reason" in vars(cls), cls.__name__


def test_all_errors_lists_every_exported_class():
    exported = {getattr(errors, name) for name in errors.__all__ if name != "ALL_ERRORS"}
    assert set(errors.ALL_ERRORS) == exported
    assert all(issubclass(cls, errors.PyomniError) for cls in errors.ALL_ERRORS)


@pytest.mark.parametrize(("group", "builtin"), list(GROUPS.items()))
def test_groups_inherit_the_builtin_callers_expect(group, builtin):
    assert issubclass(group, builtin)
    assert issubclass(group, errors.PyomniError)


def test_every_concrete_class_belongs_to_one_group_or_is_a_special_case():
    special = {errors.PyomniError: Exception, errors.OutOfMemory: MemoryError,
               errors.InvariantViolation: AssertionError, errors.Unavailable: ConnectionError,
               errors.DeadlineExceeded: TimeoutError, errors.StorageFailed: OSError,
               errors.JournalCorrupt: RuntimeError, errors.Unauthenticated: PermissionError,
               errors.PermissionDenied: PermissionError}
    for cls in errors.ALL_ERRORS:
        if cls in special:
            assert issubclass(cls, special[cls])
            continue
        groups = [g for g in GROUPS if issubclass(cls, g)]
        assert len(groups) == 1, cls.__name__
        assert issubclass(cls, GROUPS[groups[0]])


@pytest.mark.parametrize(("cls", "builtin"), [
    (errors.InvalidQuantity, ValueError),
    (errors.InvalidCoordinates, ValueError),
    (errors.InvalidOrder, ValueError),
    (errors.DuplicateId, ValueError),
    (errors.UnknownSku, LookupError),
    (errors.UnknownLocation, LookupError),
    (errors.UnknownReservation, LookupError),
    (errors.UnknownPolicy, LookupError),
    (errors.InsufficientStock, RuntimeError),
    (errors.StockReserved, RuntimeError),
    (errors.QuantityOverflow, RuntimeError),
    (errors.ReservationNotHeld, RuntimeError),
    (errors.RequestIdReused, RuntimeError),
    (errors.CapabilityMissing, RuntimeError),
])
def test_leaf_classes_are_caught_by_their_builtin(cls, builtin):
    with pytest.raises(builtin):
        raise cls("boom", field="x")


@pytest.mark.parametrize("code", list(NATIVE_STATUS_CODES))
def test_check_status_raises_the_mapped_class(code):
    with pytest.raises(errors.PyomniError) as info:
        check_status(code, "message text", field="lines[3].qty")
    assert type(info.value) is STATUS_ERRORS[code]
    assert info.value.field == "lines[3].qty"
    assert str(info.value) == "message text"
    assert info.value.reason == STATUS_ERRORS[code].reason


@pytest.mark.parametrize("code", list(NATIVE_STATUS_CODES))
def test_check_status_without_message_still_says_something(code):
    with pytest.raises(STATUS_ERRORS[code]) as info:
        check_status(code)
    assert str(info.value)
    assert info.value.field is None


def test_check_status_returns_none_on_ok():
    assert check_status(0) is None
    assert check_status(STATUS_OK, "ignored", field="x") is None


@pytest.mark.parametrize("code", [-1, max(NATIVE_STATUS_CODES) + 1, 99])
def test_unknown_status_is_an_invariant_violation(code):
    with pytest.raises(errors.InvariantViolation):
        check_status(code, "what")


@pytest.mark.parametrize("cls", list(errors.ALL_ERRORS))
def test_errors_keep_field_and_class_across_pickling(cls):
    exc = cls("message", field="events[7]")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls
    assert back.field == "events[7]"
    assert str(back) == "message"
    assert back.reason == cls.reason
