"""Typed dataclass configs ↔ command lines and JSON, shared by every entry script.

Each field of a job's config dataclass becomes ``--field-name`` with the field's type and
default; the help text is the field's ``metadata["help"]`` (use ``arg(default, "help")``).
Tuples become space-separated lists, booleans ``--flag/--no-flag``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def arg(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help text (tuples and lists get a factory)."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={"help": help}, **kw
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of dataclass ``cls`` to ``parser``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = _base_type(hints[f.name])
        name = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "") + f" (default: {default!r})"
        if tp is bool:
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif typing.get_origin(tp) in (tuple, list):
            elem = typing.get_args(tp)[0] if typing.get_args(tp) else str
            parser.add_argument(name, nargs="*", type=elem, default=default, help=help_text)
        else:
            conv = str if tp in (Path, Any) else tp
            parser.add_argument(name, type=conv, default=default, help=help_text)


def dataclass_from_args(cls: type[T], ns: argparse.Namespace) -> T:
    """Build ``cls`` from parsed options (tuples converted back)."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if not f.init or not hasattr(ns, f.name):
            continue
        v = getattr(ns, f.name)
        if typing.get_origin(_base_type(hints[f.name])) is tuple and v is not None:
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)


def parse_config(
    cls: type[T], argv: list[str] | None = None, description: str = "", prog: str | None = None
) -> T:
    """Parse ``argv`` into a ``cls`` instance (``--help`` lists every field; ``prog`` names the
    command in the usage line, default ``sys.argv[0]``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    add_dataclass_args(p, cls)
    return dataclass_from_args(cls, p.parse_args(argv))


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy scalars → plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return obj


def write_atomic(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix, so writers that add one
    do not), then ``os.replace`` it into place: a reader or a crash never sees a half-written
    file, and a failed write leaves the old file and no temporary behind. Files end up 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (``write_atomic``)."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (``write_text_atomic``)."""
    return write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2))
