"""``Frozen``: what a frozen dataclass gave the store's records, without importing dataclasses."""

from __future__ import annotations

import copy
import pickle

import pytest

from sb_otel._tracking.outcome import Outcome
from sb_otel._tracking.values import Frozen


class Pair(Frozen):
    __slots__ = ("left", "right")

    left: int
    right: list[int] | None

    def __init__(self, left: int, right: list[int] | None = None) -> None:
        self._set(left=left, right=right)


def test_fields_follow_the_annotations_in_order() -> None:
    assert Pair._fields == ("left", "right")
    assert repr(Pair(1, [2])) == "Pair(left=1, right=[2])"


def test_equality_and_hash_by_value_and_class() -> None:
    assert Pair(1) == Pair(1)
    assert Pair(1) != Pair(2)
    assert hash(Pair(1)) == hash(Pair(1))
    assert Outcome("exited") != Pair(1)
    with pytest.raises(TypeError):
        hash(Pair(1, [2]))  # a mutable field makes it unhashable, as for a frozen dataclass


def test_fields_cannot_be_assigned_or_deleted() -> None:
    pair = Pair(1)
    with pytest.raises(AttributeError, match="immutable"):
        pair.left = 2
    with pytest.raises(AttributeError, match="immutable"):
        del pair.left
    assert pair.left == 1


def test_replace_copies_with_changes_and_refuses_unknown_fields() -> None:
    pair = Pair(1, [2])
    changed = pair.replace(left=3)
    assert changed == Pair(3, [2])
    assert pair == Pair(1, [2])
    with pytest.raises(TypeError, match="no field"):
        pair.replace(middle=0)


def test_copies_and_pickles() -> None:
    pair = Pair(1, [2])
    assert copy.copy(pair) == pair
    deep = copy.deepcopy(pair)
    assert deep == pair
    assert deep.right is not pair.right
    assert pickle.loads(pickle.dumps(pair)) == pair


def test_slots_must_name_the_annotated_fields() -> None:
    with pytest.raises(TypeError, match="__slots__ must name exactly"):

        class Broken(Frozen):
            __slots__ = ("left",)

            left: int
            right: int


class Triple(Pair):
    __slots__ = ("middle",)

    middle: str

    def __init__(self, left: int, middle: str, right: list[int] | None = None) -> None:
        self._set(left=left, middle=middle, right=right)


def test_a_subclass_sets_its_own_and_its_bases_fields_and_an_unknown_name_still_fails() -> None:
    """Fields are set through each slot's own setter, a base class's slots included; a name that is no slot
    fails as ``object.__setattr__`` would."""
    triple = Triple(1, "m", [3])
    assert (triple.left, triple.middle, triple.right) == (1, "m", [3])
    assert Triple._fields == ("middle",)
    with pytest.raises(AttributeError):
        triple._set(unknown=1)
