"""One registry mechanism for every kind of component (models, losses, optimizers, schedules).

A component registers under a name with its own settings dataclass; a config section names it
(``model.name: fusion``) and holds its settings beside the name::

    MODELS = Registry("model", "model")  # colorize.models.MODELS

    @MODELS.register("tiny", TinySettings)
    class Tiny(Colorizer): ...

Settings are validated against that dataclass when the config is loaded.
"""
import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

from colorize.errors import ConfigError


@dataclass
class NoSettings:
    """For a component that has no settings."""


@dataclass
class Entry:
    factory: Callable[..., Any]
    settings: type


class Registry:
    """Components of one kind, by name; ``section`` is the config section that names them."""

    def __init__(self, kind: str, section: str):
        self.kind, self.section = kind, section
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, settings: type = NoSettings):
        """Decorator: make ``factory`` (a class or a function) buildable as ``<section>.name=<name>``."""

        def add(factory):
            if name in self._entries:
                owner = self._entries[name].factory
                raise ValueError(f"{self.kind} {name!r} is already registered, by "
                                 f"{owner.__module__}.{owner.__qualname__}; pick another name")
            self._entries[name] = Entry(factory, settings)
            return factory

        return add

    def names(self) -> List[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry of ``name``; an unknown name is a ConfigError with the known ones."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{self.section}.name={name!r} is not a known {self.kind}{hint} "
                              f"(known: {', '.join(self.names())})")
        return self._entries[name]

    def build(self, name: str, settings, *args, **kwargs):
        """``factory(settings, *args, **kwargs)`` of ``name``."""
        return self.entry(name).factory(settings, *args, **kwargs)
