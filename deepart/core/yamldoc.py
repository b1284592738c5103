"""The documentation a config file carries: each key with its default as written and the comment on its line
(continued on the comment lines below it) or on the lines above it, the file's header comment and its defaults
list. The reference pages (deepart.docgen) and the commands' `--help` are written from it, so a key documented
in its yaml is documented everywhere."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_KEY = re.compile(r"^(\s*)([A-Za-z0-9_@./-]+):(?:\s+(.*))?$")
_ITEM = re.compile(r"^(\s*)-\s+(.*)$")


@dataclass
class Key:
    path: str               # dotted, relative to the file's package
    default: str            # as written in the file ('' for a section: a key whose value is the keys below it)
    comment: str
    line: int               # 1-based line of the key in its file


@dataclass
class Defaults:
    group: str              # `data`, `override /data`, `/data_defaults@_here_`, `_self_` ...
    option: str | None      # the option chosen, None for an entry without one (`_self_`, a config name)
    comment: str


@dataclass
class YamlDoc:
    path: Path
    header_lines: list[str]                      # the comment at the top of the file, line by line
    package: str | None                          # `# @package` of the file, if it has one
    keys: list[Key] = field(default_factory=list)
    defaults: list[Defaults] = field(default_factory=list)

    @property
    def header(self) -> str:
        return _join(self.header_lines)

    def key(self, path: str) -> Key | None:
        return next((k for k in self.keys if k.path == path), None)


def _split_comment(text: str) -> tuple[str, str | None, int]:
    """`value  # comment` -> (value, comment, column of '#'); a '#' inside quotes or not after a space is text."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].rstrip(), i
    return text.rstrip(), None, -1


def _join(parts: list[str]) -> str:
    return " ".join(p for p in (s.strip() for s in parts) if p)


def _flow(value: Any) -> str:
    """A loaded value written on one line (block lists and mappings of the file)."""
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def read(path: str | Path) -> YamlDoc:
    """Read the keys, defaults and comments of one config file. The keys found are checked against the file as
    YAML loads it, so a layout this reader does not understand fails here rather than documenting wrongly."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    loaded = yaml.safe_load("\n".join(lines)) or {}

    package = None
    header: list[str] = []
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        text = lines[i].strip()[1:].strip()
        if text.startswith("@package"):
            package = text.split(None, 1)[1].strip() if len(text.split()) > 1 else ""
        else:
            header.append(text)
        i += 1

    doc = YamlDoc(path=path, header_lines=header, package=package)
    stack: list[tuple[int, str, Key | None]] = []     # (indent, key, entry) of the open sections
    above: list[str] = []                              # comment lines waiting for the key below them
    above_col = -1
    last: Key | Defaults | None = None                 # the entry an indented comment line continues
    last_indent = -1                                   # that entry's indent (it has a comment on its line)
    in_defaults = False
    block_indent = None                                # inside a block scalar or a block list: its key's indent

    def attach_orphans(indent: int) -> None:
        """Comment lines with no key below them (end of a section) belong to the section they are in."""
        nonlocal above
        if above and above_col > 0:
            owner = next((e for ind, _, e in reversed(stack) if ind < above_col and e is not None), None)
            if owner is not None:
                owner.comment = _join([owner.comment, *above])
        above = []

    for n in range(i, len(lines)):
        raw = lines[n]
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent or (stripped.startswith("-") and indent == block_indent
                                                           and not in_defaults):
                continue
            block_indent = None
        if not stripped:
            attach_orphans(indent)
            last = None
            continue
        if stripped.startswith("#"):
            text = stripped[1:].strip()
            if last is not None and indent > last_indent:
                last.comment = _join([last.comment, text])
            elif not text.startswith("- "):               # a commented-out list item is not documentation
                if not above:
                    above_col = indent
                above.append(text)
                last = None
            continue
        item = _ITEM.match(raw)
        if item and in_defaults:
            body, comment, _ = _split_comment(item.group(2))
            group, _, option = body.partition(":")
            if comment is not None and comment.startswith("   ") and doc.defaults and not above:
                doc.defaults[-1].comment = _join([doc.defaults[-1].comment, comment])  # `#   ` continues
                comment = None
            entry = Defaults(group=group.strip(), option=option.strip().strip("'\"") or None if option else None,
                             comment=_join([*above, comment or ""]))
            doc.defaults.append(entry)
            above, last, last_indent = [], (entry if comment is not None else None), len(item.group(1))
            continue
        m = _KEY.match(raw)
        if not m:
            raise ValueError(f"{path}:{n + 1}: a line the config reader does not understand: {raw.strip()!r}")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        value, comment, _ = _split_comment(m.group(3) or "")
        name = m.group(2)
        if indent == 0 and name == "defaults":
            in_defaults = True
            above, last = [], None
            continue
        if indent == 0:
            in_defaults = False
        dotted = ".".join([*(k for _, k, _ in stack), name])
        if value == "" and n + 1 < len(lines) and _ITEM.match(lines[n + 1]) and not in_defaults:
            value = _flow(_lookup(loaded, dotted))                          # a block list
            block_indent = indent
        elif value in ("|", "|-", ">", ">-"):
            value = "(text)"
            block_indent = indent
        entry = Key(path=dotted, default=value, comment=_join([*above, comment or ""]), line=n + 1)
        above = []
        doc.keys.append(entry)
        last, last_indent = (entry if comment is not None else None), indent
        if value == "":
            stack.append((indent, name, entry))
    attach_orphans(0)
    _check(doc, loaded)
    return doc


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _leaves(tree: Any, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out |= {path} | _leaves(v, path + ".")
        else:
            out.add(path)
    return out


def _check(doc: YamlDoc, loaded: dict) -> None:
    expected = _leaves({k: v for k, v in loaded.items() if k != "defaults"})
    found = {k.path for k in doc.keys}
    if expected != found:
        raise ValueError(f"{doc.path}: the config reader found the keys {sorted(found ^ expected)} differently from "
                         "YAML; keep one key per line (block lists and `|` text are understood)")


def is_section(key: Key) -> bool:
    return key.default == ""


def help_text(path: str | Path, usage: str, reference: str) -> str:
    """A command's `--help`: its usage line, the config file's header and every key with its default and
    comment, and where the reference page is."""
    doc = read(path)
    rows = [(k.path, "required" if k.default == "???" else k.default, k.comment)
            for k in doc.keys if not is_section(k)]
    rows += [(f"{d.group}=<option>", str(d.option), d.comment) for d in doc.defaults
             if d.option is not None and not d.group.startswith("override")]
    key_width = max((len(r[0]) for r in rows), default=0)
    value_width = min(max((len(r[1]) for r in rows), default=0), 24)
    lines = [f"  {key:<{key_width}}  {value:<{value_width}}" + (f"  {comment}" if comment else "")
             for key, value, comment in rows]
    return "\n".join([f"usage: {usage}", "", *doc.header_lines, "", "options (key=value):", *lines, "",
                      f"every option: {reference}"])
