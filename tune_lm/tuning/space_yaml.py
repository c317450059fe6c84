"""Reading a search-space file (a path, or a shipped space by name) into a validated
:class:`~tune_lm.tuning.space.SearchSpace`: safely, and within bounds.

``yaml.safe_load`` runs no code, but it silently keeps the last of two equal keys and
expands aliases without limit: a few hundred bytes of "billion laughs" become 10**9
values for whatever walks the result. So a space file is read up to
:data:`MAX_BYTES`; its node graph is composed (an alias is still one shared node),
walked once counting nodes as if every alias were expanded (at most
:data:`MAX_NODES`), checked for repeated keys, and only then built into Python
values by PyYAML's ``SafeLoader``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tune_lm.tuning.space import SearchSpace, SpaceError

SHIPPED_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
MAX_BYTES = 64 * 1024  # the shipped spaces are 1-2 KB; 64 KiB of YAML parse in ~0.5 s
MAX_NODES = 100_000  # every alias expanded; the shipped spaces have about 150
_MERGE_TAG = "tag:yaml.org,2002:merge"
_UNCOMPARED = object()  # a key that is not a plain scalar (None is a key: ~ or null)


class _SpaceLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers instead of YAML 1.1's: ``1e-3`` is a
    float (YAML 1.1 reads text, without a dot), ``1:30`` is text (YAML 1.1 reads 90, in
    base 60) and ``035`` is 35 (YAML 1.1 reads 29, in octal)."""


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_SpaceLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}  # a copy: SafeLoader's own resolvers are left as they are
_SpaceLoader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?[0-9][0-9_]*$|^[-+]?0x[0-9a-fA-F_]+$"), list("-+0123456789"))
_SpaceLoader.add_implicit_resolver(_FLOAT, re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))  # after int


def _decimal_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """Base 10 whatever the leading zeros (YAML 1.1: octal), or 16 after ``0x``."""
    text = loader.construct_scalar(node).replace("_", "")
    return int(text, 16 if "x" in text.lower() else 10)


_SpaceLoader.add_constructor(_INT, _decimal_int)


class SpaceFileError(ValueError):
    """A space file refused before it became data; the message lacks only the path."""


def read_space_text(path: Path) -> str:
    """The text of ``path``, refused (not read to the end) when over :data:`MAX_BYTES`."""
    with path.open("rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise SpaceFileError(
            f"the file is larger than {MAX_BYTES // 1024} KiB, which no search space "
            "needs (they are a few KB); is it the right file?"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a byte-order mark: Windows' "Unicode"
            raise SpaceFileError("the file is UTF-16 text (as Windows Notepad saves "
                                 "'Unicode'), not UTF-8. Save it as UTF-8 (e.g. iconv -f "
                                 "UTF-16 -t UTF-8)") from None  # fmt: skip
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise SpaceFileError(
            f"the file is not UTF-8 text: byte 0x{raw[error.start]:02x} at line {line}, column "
            f"{column} (another encoding, such as Latin-1?). Save the file as UTF-8"
        ) from None


def parse_space_yaml(text: str) -> Any:
    """Plain data (dicts, lists, scalars) out of one YAML document, or None if it is empty.

    Raises :class:`SpaceFileError` for repeated keys or too many nodes, and PyYAML's
    errors (``yaml.YAMLError``, ``RecursionError``, ``ValueError``) for bad YAML.
    """
    loader = _SpaceLoader(text)  # safe: no tag runs code or builds an arbitrary object
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_nodes(root, loader)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node, loader: yaml.SafeLoader) -> None:
    """Walks the graph once per alias use (without recursion), counting nodes, and refuses
    a mapping that repeats a key. Nothing of the document goes into a message."""
    budget = MAX_NODES
    # (node, where): where is (".key" or "[index]", parent's where) or None, joined into
    # "a.b[0]" only for a message, so a deep document costs no long strings.
    stack: list[tuple[yaml.Node, tuple | None]] = [(root, None)]
    while stack:
        node, where = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpaceFileError(
                f"it expands to more than {MAX_NODES:,} YAML values once its aliases (*name) "
                "are replaced by what they point to (an alias bomb, or an alias inside its "
                "own anchor); a search space has a few hundred. Write the values out instead "
                "of nesting aliases"
            )
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (f"[{index}]", where)) for index, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            first_seen: dict[Any, yaml.Mark] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:  # "<<: *base": keys given here override it
                    stack.append((value_node, where))
                    continue
                key = _key_of(key_node, loader)
                if key is not _UNCOMPARED and key in first_seen:
                    raise SpaceFileError(
                        f"key {_dotted((f'.{key}', where))!r} appears twice in the same mapping, "
                        f"at {_place(first_seen[key], key_node.start_mark)} (YAML would "
                        "silently keep the last one); keep one of them"
                    )
                if key is not _UNCOMPARED:
                    first_seen[key] = key_node.start_mark
                stack.append((key_node, where))
                stack.append((value_node, (f".{key}", where)))


def _dotted(where: tuple | None) -> str:
    parts = []
    while where is not None:
        part, where = where
        parts.append(part)
    return "".join(reversed(parts)).removeprefix(".")


def _place(first: yaml.Mark, second: yaml.Mark) -> str:
    if first.line != second.line:
        return f"line {first.line + 1} and line {second.line + 1}"
    return f"line {first.line + 1}, columns {first.column + 1} and {second.column + 1}"


def _key_of(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """A scalar key's value (``1`` and ``0x1`` are the same key), else _UNCOMPARED (a list
    or mapping as a key is refused when the document is built)."""
    if not isinstance(node, yaml.ScalarNode):
        return _UNCOMPARED
    try:
        key = loader.construct_object(node)
        hash(key)
    except Exception:  # a bad scalar (!!int 12a) is reported when the document is built
        return _UNCOMPARED
    return key


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one sentence: where, what, and the fix."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or not problem:
        return f"not valid YAML ({' '.join(str(error).split())}). Fix the syntax there"
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if isinstance(error, yaml.constructor.ConstructorError) and "tag" in problem:
        tag = problem.replace("tag:yaml.org,2002:", "!!")
        return (
            f"not valid YAML for a search space at {where}: {tag}. A search space is plain "
            "data (mappings, lists, strings, numbers); remove the tag"
        )
    context, context_mark = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and context_mark is not None and context_mark is not mark:
        context += f" that starts at line {context_mark.line + 1}, column {context_mark.column + 1}"
    return f"not valid YAML at {where}: {problem}{f' ({context})' if context else ''}. Fix it there"


def resolve_space_path(name_or_path: str) -> Path:
    """A path as given, else a shipped space by bare name (``cells`` or ``cells.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = SHIPPED_SPACES / f"{stem}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.name for p in SHIPPED_SPACES.glob("*.yaml")))
    if path.exists():  # a folder, a device
        raise SpaceError(f"search space {name_or_path!r} is not a file (a folder?): give the "
                         "path of a YAML file, or a shipped space: " + (available or "none"))
    raise SpaceError(
        f"search space {name_or_path!r} not found: it is neither a file nor a shipped "
        f"space. Shipped spaces: {available or 'none'}; or give a path to a YAML file"
    )


def load_space(name_or_path: str) -> SearchSpace:
    """Read, parse (safely, within bounds) and validate a search-space YAML file."""
    path = resolve_space_path(name_or_path)
    try:
        raw = parse_space_yaml(read_space_text(path))
    except SpaceFileError as error:
        raise SpaceError(f"{path}: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpaceError(f"{path}: cannot be read ({error})") from None
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: {describe_yaml_error(error)}") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a search space") from None
    except Exception as error:  # some bad scalars escape PyYAML raw: !!int 12a, 2020-13-45
        raise SpaceError(
            f"{path}: not valid YAML ({type(error).__name__}: {error}). Fix the value there"
        ) from None
    if raw is None or raw == {}:
        raise SpaceError(
            f"{path}: the search space is empty, so there is nothing to search. Give at "
            "least 'parameters:' (see the README's 'Search spaces', or a shipped space "
            "such as quick.yaml)"
        )
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: the top level must be a mapping of keys (name, parameters, ...)")
    raw.setdefault("name", path.stem)
    return SearchSpace.from_raw(raw, source=str(path))
