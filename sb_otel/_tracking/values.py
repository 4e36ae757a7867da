"""Small immutable value classes without :mod:`dataclasses`, for the modules ``sb-otel emit`` imports.

``emit start``/``emit end`` run as a shell starts and exits. Importing :mod:`dataclasses` (it imports
:mod:`inspect`, :mod:`ast`, :mod:`dis`, :mod:`tokenize`) and building a dataclass (it compiles its methods) cost
such a process about as much as a bare ``python -c pass`` (``benchmarks/emit.py``). So the records on that path
(the store's, the outcome, the export state's) derive from :class:`Frozen`: each declares its fields as
annotations (and in ``__slots__``) and an explicit ``__init__``; equality, hashing, ``repr``, immutability and
:meth:`Frozen.replace` come from the fields, as a frozen dataclass would give them.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

__all__ = ("Frozen",)

_F = TypeVar("_F", bound="Frozen")


class Frozen:
    """Base of an immutable value class: its fields are its annotations, in order, each also in ``__slots__``.

    A subclass's ``__init__`` takes the fields by their names and sets them with :meth:`_set`; assigning or
    deleting a field afterwards raises :class:`AttributeError` (a frozen dataclass's ``FrozenInstanceError``
    is one too)."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _setters: ClassVar[dict[str, Any]] = {}
    """Each slot's own setter, by field name (its class's and its bases'): what ``object.__setattr__`` finds after
    a look-up per field, taken directly (records are built several times a lifecycle)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # its own annotations only (inspect.get_annotations would import inspect, which this module avoids)
        cls._fields = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
        if set(cls._fields) != set(cls.__dict__.get("__slots__", ())):
            raise TypeError(f"{cls.__name__}: __slots__ must name exactly its annotated fields {cls._fields}")
        cls._setters = {
            name: klass.__dict__[name].__set__
            for klass in reversed(cls.__mro__)
            for name in klass.__dict__.get("__slots__", ())
            if hasattr(klass.__dict__.get(name), "__set__")
        }

    def _set(self, **fields: Any) -> None:
        """Set fields from ``__init__`` (plain assignment is refused)."""
        setters = self._setters
        for name, value in fields.items():
            setter = setters.get(name)
            if setter is None:  # not a slot of this class: as before, object's own rules (and error)
                object.__setattr__(self, name, value)
            else:
                setter(self, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__name__}: it is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__name__}: it is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frozen) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __getstate__(self) -> tuple[Any, ...]:
        return self._values()

    def __setstate__(self, state: tuple[Any, ...]) -> None:  # pickle and copy, which would assign the slots
        for name, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, name, value)

    def replace(self: _F, **changes: Any) -> _F:
        """A copy with ``changes`` applied (what :func:`dataclasses.replace` does for a dataclass)."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        return type(self)(**{name: changes.get(name, getattr(self, name)) for name in self._fields})
