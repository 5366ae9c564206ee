"""Things found by name: models, detectors, generators, datasets, task kinds, weight converters,
explanation methods. Adding one is adding an entry, never editing a switch.

    MODELS = ModelRegistry("model")
    MODELS.declare("resnet50", "jaxvision.models.resnet:ResNet50")   # imported on first use

    @MODELS.register("tiny_cnn")                                     # or in the leaf module
    class TinyCNN(nn.Module): ...

    MODELS["resnet50"]        # the factory; an unknown name is a one-line UserError with the
                              # names and the closest one
    MODELS.names()            # sorted as a reader expects: resnet18 < resnet34 < resnet101

An entry is declared lazily as "package.module:attribute" (or "package.module" for the module
itself), so a name costs nothing until it is used, or registered with the object. Each entry may
carry information (`info(name)`: a detector's preset options, whether a dataset takes options)
that is read without importing anything. A name is registered once: a second, different entry
under it is refused.
"""

import dataclasses
import difflib
import functools
import importlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from jaxvision.errors import UserError


def natural_key(name: str) -> list[Any]:
    """Sort key under which numbers in names compare as numbers: resnet18 < resnet34 < resnet101."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


@dataclasses.dataclass
class _Entry:
    target: str | None  # "module:attribute" of a declared entry; None for a registered one
    value: Any = None
    info: dict = dataclasses.field(default_factory=dict)
    loaded: bool = False


class Registry(Mapping):
    """name -> object (a factory, a class, a module, a function), for one `kind` of thing.

    A read-only Mapping from the outside: `registry[name]`, `name in registry`, iteration in
    `names()` order. `registry[name]` imports a declared entry on first use.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, _Entry] = {}

    def declare(self, name: str, target: str, **info: Any) -> None:
        """Adds `name` -> the object at `target` ("package.module:attribute", or
        "package.module"), imported when `name` is first looked up. `info`: what callers read
        about the entry without importing it."""
        self._add(name, _Entry(target, None, info))

    def register(self, name: str, value: Any = None, **info: Any):
        """Adds `name` -> `value`; without `value`, a decorator that registers what it decorates
        (and returns it unchanged). Registering the same object again is a no-op."""
        if value is None:
            return functools.partial(self._register_decorated, name, info)
        self._add(name, _Entry(None, value, info))
        return value

    def _register_decorated(self, name: str, info: dict, value: Any) -> Any:
        self._add(name, _Entry(None, value, info))
        return value

    def _add(self, name: str, entry: _Entry) -> None:
        old = self._entries.get(name)
        if old is not None:
            same_target = entry.target is not None and entry.target == old.target
            same_value = entry.target is None and old.target is None and entry.value is old.value
            if not (same_target or same_value):
                where = old.target or _where(old.value)
                raise ValueError(f"{self.kind} {name!r} is already registered ({where})")
            return
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Removes the entry `name` (one a test or a plugin added for a while)."""
        self._entry(name)  # an unknown name: the usual error
        del self._entries[name]

    def names(self) -> list[str]:
        """Every name, sorted with numbers compared as numbers."""
        return sorted(self._entries, key=natural_key)

    def info(self, name: str) -> dict:
        """The information `name` was declared or registered with (nothing is imported)."""
        return dict(self._entry(name).info)

    def unknown(self, name: str, lead: str | None = None, choices: str = "choose one of"):
        """The one-line UserError for a name not in the registry: `lead` (default "unknown
        <kind> '<name>'"), the names and the closest one."""
        names = self.names()
        lead = lead or f"unknown {self.kind} {name!r}"
        message = f"{lead}: {choices} {', '.join(names) or '(none)'}"
        close = self.closest(name)
        return UserError(message + (f" (did you mean {close!r}?)" if close else ""))

    def closest(self, name: str) -> str | None:
        """The registered name most like `name` (difflib's), if any is close."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        return close[0] if close else None

    def _entry(self, name: str) -> _Entry:
        if name not in self._entries:
            raise self.unknown(name)
        return self._entries[name]

    def __getitem__(self, name: str) -> Any:
        entry = self._entry(name)
        if entry.target is not None and not entry.loaded:
            module, _, attribute = entry.target.partition(":")
            value = importlib.import_module(module)
            for part in filter(None, attribute.split(".")):
                value = getattr(value, part)
            entry.value, entry.loaded = value, True
        return entry.value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _where(value: Any) -> str:
    return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"


# Dataclass fields every Flax module has that are not model options.
_FLAX_FIELDS = frozenset({"parent", "name"})


class ModelRegistry(Registry):
    """Flax modules by name: each entry is a module class or a `functools.partial` of one that
    fixes some fields (a depth: fixed fields cannot be passed to `build`). `defaults` (entry
    info) are options the entry sets that callers may still override (a small preset)."""

    def __init__(self, kind: str, *, reserved: tuple[str, ...] = ("num_classes", "dtype")):
        super().__init__(kind)
        self.reserved = frozenset(reserved)  # fields `build` sets itself, not options

    def module_class(self, name: str) -> type:
        """The Flax module class behind `name` (for its class attributes)."""
        factory = self[name]
        return factory.func if isinstance(factory, functools.partial) else factory

    def defaults(self, name: str) -> dict[str, Any]:
        """The options the entry sets beyond the module's own defaults."""
        return dict(self.info(name).get("defaults", {}))

    def options(self, name: str) -> list[str]:
        """Keyword options accepted for `name` besides the reserved fields, sorted."""
        factory = self[name]
        fixed = factory.keywords if isinstance(factory, functools.partial) else {}
        fields = {f.name for f in dataclasses.fields(self.module_class(name)) if f.init}
        return sorted(fields - _FLAX_FIELDS - set(fixed) - self.reserved)

    def create(self, name: str, **kwargs: Any):
        """The module `name` with `kwargs` (reserved fields and options; the entry's defaults
        fill what is not given). UserError for an option the module lacks."""
        valid = self.options(name)
        unknown = sorted(set(kwargs) - set(valid) - self.reserved)
        if unknown:
            raise UserError(
                f"{self.kind} {name!r} has no option {unknown[0]!r}: "
                f"choose from {', '.join(valid) or '(none)'}"
            )
        return self[name](**{**self.defaults(name), **kwargs})
