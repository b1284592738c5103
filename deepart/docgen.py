"""The reference pages, written from the code: docs/reference/config.md from conf/ (every config group, option
and key with its default and the comment its yaml carries) and docs/reference/commands.md from the commands'
configs and argument parsers.

    python -m deepart.docgen            # write both pages
    python -m deepart.docgen --check    # exit 1, naming the page, when a page differs from what would be written

The pages are sorted and carry no date, so the same code always writes the same bytes.
"""
from __future__ import annotations

import argparse
import importlib
import itertools
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from deepart.__main__ import COMMANDS
from deepart.core import yamldoc
from deepart.core.config import CONF_DIR

ROOT = CONF_DIR.parent
REFERENCE_DIR = ROOT / "docs" / "reference"
CONFIG_PAGE = "config.md"
COMMANDS_PAGE = "commands.md"
REGENERATE = "python -m deepart.docgen"

#: The commands that take `key=value` arguments read conf/<name>.yaml; these take flags, from an argparse parser
#: the module builds with `_parser()`.
ARGPARSE_COMMANDS = {
    "report": "deepart.report.sweeps",
    "download": "deepart.data.download",
    "prepare": "deepart.data.prepare",
    "paintings": "deepart.data.paintings",
}
#: Entry points of the repository that are not `python -m deepart` commands.
SCRIPTS = {
    "train.py": ("config", "train a model (every key: [the configuration reference](config.md))"),
    "eval.py": ("eval", "evaluate a checkpoint, a run dir or an export folder on a labelled split"),
}
#: Environment variables that change an argparse default; cleared while the parsers are read, so the page is
#: the same on every machine.
DEFAULT_ENV = ("DEEPART_WIKIART_LABELS_URL", "DEEPART_WIKIART_IMAGES_URL")
#: The option Hydra itself picks for a hydra/ group that conf/config.yaml leaves alone.
HYDRA_DEFAULTS = {"hydra/launcher": "basic", "hydra/sweeper": "basic", "hydra/help": "default"}

GENERATED = ("<!-- Written by `python -m deepart.docgen` from {source}; edit those, then run it "
             "(`--check` fails in CI when this page is stale). -->")


# ------------------------------------------------------------------------------------------------ markdown bits
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    tick = "``" if "`" in text else "`"
    pad = " " if tick == "``" else ""
    return f"{tick}{pad}{_cell(text)}{pad}{tick}"


def _default(value: str) -> str:
    return "required" if value == "???" else _code(value)


def _key_table(doc: yamldoc.YamlDoc, prefix: str) -> list[str]:
    rows = []
    for key in doc.keys:
        if yamldoc.is_section(key) and not key.comment:
            continue
        default = "" if yamldoc.is_section(key) else _default(key.default)
        rows.append(f"| {_code(prefix + key.path)} | {default} | {_cell(key.comment)} |")
    if not rows:
        return ["No keys of its own."]
    return ["| key | default | what it does |", "|---|---|---|", *rows]


def _header(doc: yamldoc.YamlDoc) -> list[str]:
    """The file's header comment in its order: command lines as shell blocks, the lines between as paragraphs."""
    out: list[str] = []
    for is_command, lines in itertools.groupby(doc.header_lines, key=lambda line: line.startswith("python ")):
        lines = list(lines)
        out += ["```bash", *lines, "```", ""] if is_command else [yamldoc._join(lines), ""]
    return out


# ------------------------------------------------------------------------------------------------ config.md
def _groups() -> list[str]:
    """Every config group: a folder of conf/ (at any depth) holding yaml files."""
    return sorted({p.parent.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.yaml")} - {"."})


def _main_defaults() -> dict[str, yamldoc.Defaults]:
    out = {}
    for entry in yamldoc.read(CONF_DIR / "config.yaml").defaults:
        group = entry.group.removeprefix("override ").strip("/")
        if entry.option is not None:
            out[group] = entry
    return out


def _command_configs() -> set[str]:
    return {name for name in COMMANDS if (CONF_DIR / f"{name}.yaml").is_file()} | {"eval"}


def _package(group: str, doc: yamldoc.YamlDoc) -> str:
    """The key prefix of an option's keys: `backbone.` (its group), none for `# @package _global_`."""
    if doc.package is not None:
        return "" if doc.package == "_global_" else doc.package + "."
    return group.replace("/", ".") + "."


def _shared_files() -> dict[str, list[str]]:
    """Root files of conf/ that options start from (`- /data_defaults@_here_`), by the group whose options do."""
    skip = {"config", *_command_configs()}
    shared = {p.stem: [] for p in CONF_DIR.glob("*.yaml") if p.stem not in skip}
    for group in _groups():
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            for entry in yamldoc.read(path).defaults:
                name = entry.group.lstrip("/").split("@")[0]
                if entry.option is None and name in shared and group not in shared[name]:
                    shared[name].append(group)
    return shared


def _option_defaults(doc: yamldoc.YamlDoc) -> list[str]:
    picks = []
    for entry in doc.defaults:
        if entry.group == "_self_":
            continue
        if entry.option is None:
            picks.append(f"starts from {_code(entry.group)}")
        else:
            group = entry.group.removeprefix("override ").strip().lstrip("/")
            picks.append(_code(f"{group}={entry.option}") + (f" ({entry.comment})" if entry.comment else ""))
    return [f"Composes: {', '.join(picks)}.", ""] if picks else []


def config_page() -> str:
    defaults = _main_defaults()
    shared = _shared_files()
    main = yamldoc.read(CONF_DIR / "config.yaml")
    out = [GENERATED.format(source="conf/"), "", "# Configuration reference", "",
           "Every config group, option and key of `python train.py`, with the default as written in `conf/` and the "
           "comment it carries there. Pick an option with `group=option` and change a key with `group.key=value` "
           "(`python train.py phase=2 phase.lr=3e-4`); `python train.py --cfg job` prints the composed config and "
           "`python train.py --help` lists the groups. The commands' own options are in [commands.md](commands.md).",
           "", "## Config groups", "", "| group | options | default |", "|---|---|---|"]
    for group in _groups():
        options = ", ".join(_code(o) for o in _options(group))
        entry = defaults.get(group)
        default = _code(entry.option) if entry else (f"Hydra's {_code(HYDRA_DEFAULTS[group])}"
                                                     if group in HYDRA_DEFAULTS else "")
        out.append(f"| [{_code(group)}](#{_slug(group)}) | {options} | {default} |")
    out += ["", "## Main config: `conf/config.yaml`", "", *_header(main), "### Defaults", "",
            "| group | default | what it does |", "|---|---|---|"]
    for entry in main.defaults:
        if entry.option is not None:
            out.append(f"| {_code(entry.group)} | {_code(entry.option)} | {_cell(entry.comment)} |")
    out += ["", "### Keys", "", *_key_table(main, ""), ""]
    for group in _groups():
        entry = defaults.get(group)
        chosen = (f"default {_code(entry.option)}" if entry else
                  f"default: Hydra's {_code(HYDRA_DEFAULTS[group])}" if group in HYDRA_DEFAULTS else "no default")
        out += [f"## `{group}`", "", f"`conf/{group}/`: pick one with `{group}=<option>` ({chosen})."
                + (f" In `config.yaml`: {entry.comment}" if entry and entry.comment else ""), ""]
        for name, groups in sorted(shared.items()):
            if group in groups:
                doc = yamldoc.read(CONF_DIR / f"{name}.yaml")
                out += [f"### Keys every `{group}` option starts from: `conf/{name}.yaml`", "", *_header(doc),
                        *_key_table(doc, group.replace("/", ".") + "."), ""]
        for option in _options(group):
            doc = yamldoc.read(CONF_DIR / group / f"{option}.yaml")
            prefix = _package(group, doc)
            out += [f"### `{group}={option}`", "", *_header(doc), *_option_defaults(doc)]
            if doc.package == "_global_":
                out += ["Its keys are top-level keys (`# @package _global_`).", ""]
            out += [*_key_table(doc, prefix), ""]
    others = sorted(name for name, groups in shared.items() if not groups)
    for name in others:
        doc = yamldoc.read(CONF_DIR / f"{name}.yaml")
        out += [f"## `conf/{name}.yaml`", "", *_header(doc), *_key_table(doc, ""), ""]
    return "\n".join(out).rstrip() + "\n"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading whose text is `heading` in a code span."""
    return "".join(ch for ch in heading.lower() if ch.isalnum() or ch in "-_ ").replace(" ", "-")


# ------------------------------------------------------------------------------------------------ commands.md
@contextmanager
def _plain_env():
    saved = {name: os.environ.pop(name) for name in DEFAULT_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _parser(name: str) -> argparse.ArgumentParser:
    with _plain_env():
        return importlib.import_module(ARGPARSE_COMMANDS[name])._parser()


def _usage(prog: str, parser: argparse.ArgumentParser) -> str:
    """One usage line, written here rather than by argparse (whose layout differs between Python versions)."""
    parts = [prog]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            name = "{" + ",".join(action.choices) + "}" if action.choices else (action.metavar or action.dest)
            parts.append({"+": f"{name} [{name} ...]", "*": f"[{name} ...]", "?": f"[{name}]"}.get(action.nargs, name))
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            parts.append(f"[{flag}]")
        else:
            parts.append(f"[{flag} {action.metavar or action.dest.upper()}]")
    return " ".join(parts)


def _argparse_table(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings) + ("" if action.nargs == 0 else
                                                        f" {action.metavar or action.dest.upper()}")
        else:
            name = action.metavar or action.dest
        text = (action.help or "") % {**vars(action), "prog": parser.prog}
        if action.choices and not action.option_strings:
            text = yamldoc._join([text, "one of: " + ", ".join(map(str, action.choices))])
        default = "" if action.default in (None, False) or action.nargs in ("+", "*") else _code(str(action.default))
        rows.append(f"| {_code(name)} | {default} | {_cell(text)} |")
    return ["| argument | default | what it does |", "|---|---|---|", *rows]


def _command_section(title: str, what: str, module: str | None, config: str | None,
                     parser: argparse.ArgumentParser | None) -> list[str]:
    out = [f"## `{title}`", "", what[0].upper() + what[1:] + "." + (f" Module: `{module}`." if module else ""), ""]
    if config:
        doc = yamldoc.read(CONF_DIR / f"{config}.yaml")
        out += [*_header(doc), f"Options (`key=value`, from `conf/{config}.yaml`):", ""]
        rows = _key_table(doc, "")
        picks = [d for d in doc.defaults if d.option is not None and not d.group.startswith("override")]
        if picks:
            rows += [f"| {_code(d.group + '=<option>')} | {_code(d.option)} | {_cell(d.comment)} |" for d in picks]
        out += [*rows, ""]
    if parser:
        out += ["```bash", _usage(title, parser), "```", ""]
        if parser.description:
            out += [parser.description, ""]
        out += [*_argparse_table(parser), ""]
    return out


def commands_page() -> str:
    configs = _command_configs()
    out = [GENERATED.format(source="conf/<command>.yaml and the commands' argument parsers"), "",
           "# Commands reference", "",
           "Every command, with its options as its own config or argument parser defines them. "
           "`python -m deepart` lists the commands and `python -m deepart <command> --help` prints one's options; "
           "each command is also its module, named in its section.", "",
           "| command | what it does |", "|---|---|"]
    for name, (_, what) in COMMANDS.items():
        out.append(f"| [`python -m deepart {name}`](#{_slug('python -m deepart ' + name)}) | {_cell(what)} |")
    for script, (_, what) in SCRIPTS.items():
        out.append(f"| [`python {script}`](#{_slug('python ' + script)}) | {what} |")
    out.append("")
    for name, (module, what) in COMMANDS.items():
        if name in ARGPARSE_COMMANDS:
            out += _command_section(f"python -m deepart {name}", what, module, None, _parser(name))
        elif name in configs:
            out += _command_section(f"python -m deepart {name}", what, module, name, None)
        else:
            raise ValueError(f"the command {name!r} has neither conf/{name}.yaml nor an entry in "
                             "deepart.docgen.ARGPARSE_COMMANDS: add one so that its reference is written")
    for script, (config, what) in SCRIPTS.items():
        if config == "config":
            out += [f"## `python {script}`", "", what[0].upper() + what[1:] + ".", ""]
        else:
            out += _command_section(f"python {script}", what, None, config, None)
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------ the command
def pages() -> dict[Path, str]:
    return {REFERENCE_DIR / CONFIG_PAGE: config_page(), REFERENCE_DIR / COMMANDS_PAGE: commands_page()}


def stale() -> list[Path]:
    """The reference pages whose files differ from what the code writes now (or are missing)."""
    return [path for path, text in pages().items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepart.docgen", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a page differs from what would be written")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            print(f"{path.relative_to(ROOT).as_posix()} is stale: regenerate it with `{REGENERATE}`",
                  file=sys.stderr)
        return 1 if bad else 0
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
