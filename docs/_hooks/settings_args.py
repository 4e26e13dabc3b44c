"""A griffe extension for the API pages: an optimizer class whose ``Args:`` are made at import
time from its settings model (``policyopt.registry.with_settings_args``) gets its docstring from
the imported class, since griffe reads docstrings from the source."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import griffe


class SettingsArgs(griffe.Extension):
    """Replaces the static docstring of a class marked ``__settings_args__`` with its runtime one."""

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        module = importlib.import_module(cls.module.path)
        obj = getattr(module, cls.name, None)
        if obj is None or not getattr(obj, "__settings_args__", False) or cls.docstring is None:
            return
        cls.docstring = griffe.Docstring(
            inspect.getdoc(obj) or "",
            lineno=cls.docstring.lineno,
            endlineno=cls.docstring.endlineno,
            parent=cls,
            parser=cls.docstring.parser,
            parser_options=cls.docstring.parser_options,
        )
