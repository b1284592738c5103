"""The documentation is tested like code: every relative link and #anchor resolves, every code fence is closed,
every `group=option` / `key=value` of a `python train.py` or `python eval.py` command in a shell block composes
with Hydra, every `python -m deepart <command>` named exists, and the generated reference pages are current.

A failure names the file and line. Placeholders (`<run dir>`, `...`, `[overrides]`, `$VAR`) are skipped by the
patterns in PLACEHOLDERS, never by catching a failure: a token that is neither an override, a flag nor a known
placeholder fails the test."""
from __future__ import annotations

import functools
import importlib.util
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from deepart import docgen
from deepart.__main__ import COMMANDS
from deepart.core.config import compose_config
from deepart.core.errors import DeepArtError

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted({*(ROOT / name for name in ("README.md", "CHANGELOG.md", "RESULTS.md", "BENCHMARKS.md")
                 if (ROOT / name).is_file()), *(ROOT / "docs").rglob("*.md")})

#: Fenced blocks of these languages are shell (an untagged fence and an indented block too, where a line runs a
#: command); other languages (python, yaml, text ...) are not read for commands.
SHELL = {"", "bash", "sh", "shell", "console", "zsh"}
#: What a command line may carry that is not an override: each pattern is a documented stand-in for a value.
PLACEHOLDERS = {
    "angle": re.compile(r"<[^<>]*>"),                # <run dir>, <date>/<time>, <option>
    "ellipsis": re.compile(r"\.\.\.|…"),             # ckpt=... , [key=value ...]
    "bracketed": re.compile(r"^\[[^=\]]*\]?$|^\[.*\.\.\.\]?$|^\[.*=.*\]$"),   # [overrides], [key=value ...]
    "shell_var": re.compile(r"\$\{?\w+"),            # $P/default, ${RUN}
}
#: Hydra's own flags of train.py / eval.py, and those that take the next word as their value.
HYDRA_FLAGS = {"-m", "--multirun", "--resolve", "--help", "-h", "--hydra-help", "--run", "-r", "--info", "-i",
               "--shell-completion", "-sc"}
HYDRA_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                          "--config-dir", "-cd", "--experimental-rerun"}
SCRIPTS = {"train.py": "config", "eval.py": "eval"}


#: An HTML comment on the line before a code block whose `python train.py` / `eval.py` commands are shown failing
#: on purpose (an unknown option and its error message): the test then checks that each one does NOT compose.
FAILS_MARKER = "<!-- docs-test: fails -->"
#: Pages that record old spellings on purpose (renames): their `python -m deepart...` names are not checked.
HISTORY = {"CHANGELOG.md"}


@dataclass
class Block:
    lang: str
    start: int                  # 1-based line of the first line of code
    lines: list[str]
    fails: bool = False         # marked with FAILS_MARKER


@dataclass
class Doc:
    path: Path
    lines: list[str]
    blocks: list[Block]
    prose: list[tuple[int, str]]        # (line, text) outside code blocks
    unclosed: int | None                # the line of a fence that is never closed

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix() if self.path.is_relative_to(ROOT) else self.path.name


_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")


def parse(path: Path) -> Doc:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, prose = [], []
    fence = None
    unclosed = None
    previous_blank = True
    indented: Block | None = None
    for n, line in enumerate(lines, 1):
        if fence:
            char, length, block = fence
            if re.match(rf"^ {{0,3}}{re.escape(char)}{{{length},}}\s*$", line):
                fence, unclosed = None, None
            else:
                block.lines.append(line)
            continue
        m = _FENCE.match(line)
        marked = n >= 2 and _marked(lines, n - 2)
        if m:
            block = Block(lang=m.group(2).lower(), start=n + 1, lines=[], fails=marked)
            blocks.append(block)
            fence, unclosed, indented = (m.group(1)[0], len(m.group(1)), block), n, None
            continue
        if line.startswith("    ") and (previous_blank or indented is not None):
            if indented is None:
                indented = Block(lang="", start=n, lines=[], fails=marked)
                blocks.append(indented)
            indented.lines.append(line[4:])
            previous_blank = False
            continue
        if not line.strip():
            if indented is not None:
                indented.lines.append("")
            previous_blank = True
            continue
        indented = None
        previous_blank = False
        prose.append((n, line))
    return Doc(path=path, lines=lines, blocks=blocks, prose=prose, unclosed=unclosed)


def _marked(lines: list[str], i: int) -> bool:
    """Whether the last non-blank line at or before index i is FAILS_MARKER."""
    while i >= 0 and not lines[i].strip():
        i -= 1
    return i >= 0 and lines[i].strip() == FAILS_MARKER


PARSED = {path: parse(path) for path in DOCS}


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in paths]


# ------------------------------------------------------------------------------------------------ anchors
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered, lower-cased, punctuation dropped, spaces as '-'."""
    text = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("**", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(doc: Doc) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in doc.prose:
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(2))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found |= set(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", line))
    return found


def _strip_code_spans(text: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", text)


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HTML_LINK = re.compile(r"(?:href|src)=\"([^\"]+)\"")


def links(doc: Doc) -> Iterator[tuple[int, str]]:
    for n, line in doc.prose:
        text = _strip_code_spans(line)
        for target in [*_LINK.findall(text), *_HTML_LINK.findall(text)]:
            yield n, target
        m = re.match(r"^ {0,3}\[[^\]]+\]:\s+(\S+)", text)
        if m:
            yield n, m.group(1)


def link_problems(doc: Doc) -> list[str]:
    problems = []
    for n, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):      # http:, https:, mailto: ...
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.path.parent / file).resolve() if file else doc.path
        where = f"{doc.name}:{n}: link {target!r}"
        if not dest.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and dest.suffix == ".md":
            target_doc = PARSED.get(dest) or parse(dest)
            if anchor not in anchors(target_doc):
                problems.append(f"{where}: no heading with the anchor #{anchor} in {target_doc.name}")
    return problems


def fence_problems(doc: Doc) -> list[str]:
    return [f"{doc.name}:{doc.unclosed}: this code fence is never closed"] if doc.unclosed else []


# ------------------------------------------------------------------------------------------------ commands
@dataclass
class Command:
    line: int
    words: list[str]            # after the program: `train.py ...`, `-m deepart predict ...`
    fails: bool = False         # its block is marked as failing on purpose


def _shell_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line, text) of each command of a shell block: continuation lines joined, prompts and comments dropped,
    `a && b` and `a; b` split."""
    pending, first = "", 0
    for i, raw in enumerate(block.lines):
        line = raw.rstrip()
        if not pending:
            first = block.start + i
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        text = text[2:] if text.startswith("$ ") else text
        for part in re.split(r"\s(?:&&|\|\||;|\|)\s|;\s", text):
            yield first, part.strip()


def _words(text: str) -> list[str] | None:
    """The words of a command line, placeholders kept whole (`<run dir>` is one word), comments dropped."""
    protected = re.sub(r"<[^<>]*>", lambda m: m.group(0).replace(" ", "\0"), text)
    protected = re.sub(r"(?<=\S=)~/", "/home/user/", protected)     # the shell expands ~ after `key=`
    try:
        words = shlex.split(protected, comments=True)
    except ValueError:
        return None
    return [w.replace("\0", " ") for w in words]


def commands(doc: Doc) -> Iterator[Command]:
    for block in doc.blocks:
        if block.lang not in SHELL:
            continue
        for n, text in _shell_lines(block):
            words = _words(text)
            if not words:
                continue
            if words[0] == "python" or words[0] == "torchrun":
                program = next((i for i, w in enumerate(words) if w in SCRIPTS), None)
                if words[0] == "torchrun" and program is None:
                    continue
                yield Command(line=n, words=words[program:] if program is not None else words[1:], fails=block.fails)


def placeholder(word: str) -> str | None:
    """The name of the PLACEHOLDERS pattern `word` (or its value) is, if any."""
    return next((name for name, pattern in PLACEHOLDERS.items() if pattern.search(word)), None)


def _sweep_values(override: str) -> list[str]:
    """`key=a,b` -> [`key=a`, `key=b`]: each value of a sweep composes on its own (Hydra's compose API takes
    no sweeps); an interval is represented by its start."""
    parsed = OverridesParser.create().parse_overrides([override])[0]
    if not parsed.is_sweep_override():
        return [override]
    key = parsed.get_key_element()
    value = parsed.value()
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        values = [f"{key}={v}" for v in parsed.sweep_string_iterator()]
        # every option of a group must exist; for a key, one value shows the key exists (values are untyped)
        return values if (docgen.CONF_DIR / key.lstrip("+~")).is_dir() else values[:1]
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start}"]
    return [override]


def check_script(doc: Doc, cmd: Command) -> list[str]:
    script, args = cmd.words[0], cmd.words[1:]
    where = f"{doc.name}:{cmd.line}: `python {' '.join(cmd.words)}`"
    overrides, problems = [], []
    skip_next = False
    for word in args:
        if skip_next:
            skip_next = False
            continue
        if word in HYDRA_FLAGS_WITH_VALUE:
            skip_next = True
            continue
        if word in HYDRA_FLAGS or word.startswith("--cfg="):
            continue
        if word.startswith("~") and "=" not in word:     # a deletion: ~key
            overrides.append(word)
            continue
        if "=" not in word or word.startswith("-"):
            if not placeholder(word):
                problems.append(f"{where}: {word!r} is neither a key=value override, a Hydra flag nor a "
                                f"placeholder (tests/test_docs.py PLACEHOLDERS)")
            continue
        key, value = word.split("=", 1)
        if placeholder(key):
            continue
        if placeholder(value):
            # the value stands for one the reader fills in: the key is still checked, with a stand-in value
            # (a group's option cannot be stood in for, so a group key is checked to be a group)
            group = key.lstrip("+~")
            if (docgen.CONF_DIR / group).is_dir():
                continue
            word = f"{key}=stand-in"
        overrides.append(word)
    config_name = SCRIPTS[script]
    try:
        base = [o for o in overrides if not _is_sweep(o)]
        sweeps = [o for o in overrides if _is_sweep(o)]
        tries = [base] if not sweeps else [[*base, value] for o in sweeps for value in _sweep_values(o)]
    except HydraException as exc:
        return [*problems, f"{where}: not Hydra's override syntax: {' '.join(str(exc).split())}"]
    for overrides in tries:
        error = compose_error(config_name, tuple(overrides))
        if error and not cmd.fails:
            problems.append(f"{where}: does not compose: {error}")
        elif not error and cmd.fails:
                problems.append(f"{where}: composes, but its block is marked {FAILS_MARKER!r} (shown failing)")
    return problems


@functools.cache
def compose_error(config_name: str, overrides: tuple[str, ...]) -> str | None:
    """The first line of the error composing `overrides` raises, None when they compose."""
    try:
        compose_config(list(overrides), config_name=config_name)
    except (HydraException, OmegaConfBaseException, DeepArtError) as exc:
        return str(exc).splitlines()[0]
    return None


def _is_sweep(override: str) -> bool:
    return OverridesParser.create().parse_overrides([override])[0].is_sweep_override()


def script_problems(doc: Doc) -> list[str]:
    problems = []
    for cmd in commands(doc):
        if cmd.words and cmd.words[0] in SCRIPTS:
            problems += check_script(doc, cmd)
    return list(dict.fromkeys(problems))


def _deepart_mentions(doc: Doc) -> Iterator[tuple[int, str]]:
    """(line, text) of every code span and code line that may name a `python -m deepart...` command."""
    for n, line in doc.prose:
        for m in re.finditer(r"(`+)(.+?)\1", line):
            yield n, m.group(2)
    for block in doc.blocks:
        if block.lang in SHELL:
            for i, line in enumerate(block.lines):
                yield block.start + i, line


_MODULE_OF = {module: name for name, (module, _) in COMMANDS.items()}


def command_problems(doc: Doc) -> list[str]:
    if doc.path.name in HISTORY:
        return []
    problems = []
    for n, text in _deepart_mentions(doc):
        for m in re.finditer(r"python -m deepart(\.[\w.]+)?(?:[ \t]+([\w-]+))?", text):
            module, word = m.group(1), m.group(2)
            where = f"{doc.name}:{n}: `{m.group(0)}`"
            if module:
                name = "deepart" + module
                if name in _MODULE_OF:
                    problems.append(f"{where}: spell it `python -m deepart {_MODULE_OF[name]}` (the command's name; "
                                    "its module still runs, but the docs use one spelling)")
                elif importlib.util.find_spec(name) is None:
                    problems.append(f"{where}: there is no module {name}")
            elif word and word not in COMMANDS:
                problems.append(f"{where}: no command {word!r}; the commands are {', '.join(COMMANDS)}")
    return problems


#: Pages that may name a folder beside the checkout (the contributing guide: the test data in ../shared/) or
#: record what earlier versions did.
OUTSIDE_OK = {"docs/contributing.md", "CHANGELOG.md"}
_UPWARD = re.compile(r"(?<![\w./'-])((?:\.\./)+[\w.-][\w./-]*)")   # a quoted '../x' is a name in a message


def outside_problems(doc: Doc) -> list[str]:
    """A `../` path that leaves the repository: from the page's folder (a link), or from the repository root (a
    command's argument) where the page's folder has no such file. A user with only the repo has nothing there."""
    if doc.name in OUTSIDE_OK:
        return []
    problems = []
    for n, line in enumerate(doc.lines, 1):
        for m in _UPWARD.finditer(line):
            rel = m.group(1).rstrip(".")
            from_page, from_root = (doc.path.parent / rel).resolve(), (ROOT / rel).resolve()
            if not from_page.is_relative_to(ROOT) or (not from_root.is_relative_to(ROOT) and not from_page.exists()):
                problems.append(f"{doc.name}:{n}: {rel} is outside the repository; name what the repo makes (e.g. "
                                f"data/paintings-dev, built by `python -m deepart paintings`) or a <placeholder>")
    return problems


CHECKS = {"links": link_problems, "fences": fence_problems, "overrides": script_problems,
          "commands": command_problems, "inside": outside_problems}


@pytest.mark.parametrize("path", DOCS, ids=_ids(DOCS))
@pytest.mark.parametrize("check", CHECKS)
def test_docs(check: str, path: Path) -> None:
    """links: relative links and #anchors resolve; fences: closed; overrides: `python train.py` / `eval.py`
    commands compose; commands: `python -m deepart <command>` names a command; inside: no path leaves the repo."""
    problems = CHECKS[check](PARSED[path])
    assert not problems, "\n".join(problems)


def test_the_reference_pages_are_current() -> None:
    stale = docgen.stale()
    assert not stale, "\n".join(f"{p.relative_to(ROOT).as_posix()} is stale: regenerate it with "
                                f"`{docgen.REGENERATE}`" for p in stale)


# ------------------------------------------------------------------------------------------------ the checker itself
def test_the_checker_finds_what_it_must(tmp_path: Path) -> None:
    """A page with a broken link, a missing anchor, an open fence, a renamed key, an unknown option and command
    fails each check on its line; placeholders and sweeps pass."""
    (tmp_path / "other.md").write_text("# A heading, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "# Title",                                                                          # 1
        "[ok](other.md#a-heading-with-code) [bad](missing.md) [anchor](other.md#nope) [self](#title)",  # 2
        "```bash",                                                                          # 3
        "python train.py phase=2 loss.gamma=1,2 data.root=<where> [overrides] -m  # note",  # 4
        "python eval.py ckpt=<run dir> split=test calibrate=true",                          # 5
        "python train.py data.source.rot=x",                                                # 6
        "python train.py backbone=nosuch",                                                  # 7
        "python train.py sequencer=bilstm,nosuch stray",                                    # 8
        "python -m deepart predictt x=1; python -m deepart.data.download wikiart",          # 9
        "```",                                                                              # 10
        FAILS_MARKER,                                                                       # 11
        "",                                                                                 # 12
        "    $ python train.py backbone=vgg",                                               # 13
        "    In 'config': Could not find 'backbone/vgg'",                                   # 14
        "    $ python train.py backbone=resnet18",                                          # 15
        "",                                                                                 # 16
        "```",                                                                              # 17
    ]) + "\n")
    doc = parse(page)
    assert doc.unclosed == 17
    assert link_problems(doc) == ["page.md:2: link 'missing.md': no such file",
                                  "page.md:2: link 'other.md#nope': no heading with the anchor #nope in other.md"]
    problems = script_problems(doc)
    assert [p.split(":")[1] for p in problems] == ["6", "7", "8", "8", "15"], problems
    assert "data.source.rot" in problems[0] and "nosuch" in problems[1]
    assert "'stray' is neither" in problems[2] and "nosuch" in problems[3] and "composes, but" in problems[4]
    problems = command_problems(doc)
    assert len(problems) == 2 and all(p.startswith("page.md:9: ") for p in problems), problems
    assert "no command 'predictt'" in problems[0] and "python -m deepart download" in problems[1]


def test_a_path_outside_the_repository_is_found(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("See [results](../RESULTS.md).\n\n    python train.py data.root=../shared/paintings-dev\n")
    (tmp_path / "RESULTS.md").write_text("# Results\n")
    problems = outside_problems(parse(page))
    assert len(problems) == 2 and "../RESULTS.md" in problems[0] and ":3: ../shared/paintings-dev" in problems[1]
    inside = ROOT / "docs" / "data.md"
    assert outside_problems(Doc(inside, ["[r](../RESULTS.md)", "x=../shared/paintings-dev"], [], [], None)) == [
        "docs/data.md:2: ../shared/paintings-dev is outside the repository; name what the repo makes (e.g. "
        "data/paintings-dev, built by `python -m deepart paintings`) or a <placeholder>"]


#: A measured figure: a mean ± std, points, a percentage, a time or a speed-up. Measured figures stand in RESULTS.md
#: and BENCHMARKS.md only; a conf comment (which the reference pages and --help copy) links there instead.
FIGURE = re.compile(r"±|\+/-|\b\d+(?:\.\d+)?\s?(?:%|points?\b|pp\b|min\b|minutes?\b|hours?\b|seconds?\b|s/epoch|"
                    r"img/s|images/s)|\b\d+(?:\.\d+)?x (?:faster|slower|speed)")
_COMMENT = re.compile(r"(?:^|\s)#(.*)$")


def figure_problems(path: Path) -> list[str]:
    problems = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        comment = _COMMENT.search(line)
        if comment and FIGURE.search(comment.group(1)):
            problems.append(f"{path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name}:{n}: "
                            f"a measured figure ({FIGURE.search(comment.group(1)).group(0)!r}) in a comment; put it "
                            f"in RESULTS.md or BENCHMARKS.md and link there")
    return problems


def test_conf_comments_hold_no_measured_figures(tmp_path: Path) -> None:
    problems = [p for path in sorted((ROOT / "conf").rglob("*.yaml")) for p in figure_problems(path)]
    assert not problems, "\n".join(problems)
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: 160   # beat 128 by 4.6 points\n# 49.4 ± 2.4\n# about 6.5 min\nbatch: 64  # 2x the size\n")
    assert [p.split(":")[1] for p in figure_problems(bad)] == ["1", "2", "3"]


# ------------------------------------------------------------------------------------------------ the module map
def _map_entries(doc: str) -> dict[str, str]:
    """Package (or top-level module) -> its text in deepart/__init__.py's map (`    <name>/   text...`)."""
    entries: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = re.match(r"^    (\w+)/?\s{2,}(.*)$", line)
        if m:
            current = m.group(1)
            entries[current] = m.group(2)
        elif current and line.startswith(" " * 17) and line.strip():
            entries[current] += " " + line.strip()
        elif not line.strip():
            current = None
    return entries


def test_the_module_map_names_every_module() -> None:
    """deepart/__init__.py's docstring names every package and every module in it; docs/contributing.md's layout
    names every package and every command, and points to that map."""
    import deepart

    entries = _map_entries(deepart.__doc__)
    package = ROOT / "deepart"
    problems = []
    for sub in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        modules = sorted(m.stem for m in sub.glob("*.py") if m.stem not in ("__init__", "__main__"))
        if sub.name not in entries:
            problems.append(f"deepart/__init__.py: the map has no line for {sub.name}/")
            continue
        problems += [f"deepart/__init__.py: the map's {sub.name}/ line does not name {m}" for m in modules
                     if not re.search(rf"\b{m}\b", entries[sub.name])]
    tops = sorted(m.stem for m in package.glob("*.py") if m.stem not in ("__init__", "__main__"))
    problems += [f"deepart/__init__.py: the map does not name the module {m}" for m in tops if m not in entries]
    contributing = (ROOT / "docs" / "contributing.md").read_text()
    problems += [f"docs/contributing.md: the layout does not name {p.name}/" for p in sorted(package.iterdir())
                 if (p / "__init__.py").is_file() and f"{p.name}/" not in contributing]
    listed = re.search(r"python -m deepart <(\w+(?:\|\w+)+)>", contributing)
    if not listed or listed.group(1).split("|") != list(COMMANDS):
        problems.append(f"docs/contributing.md: the commands of __main__.py are {'|'.join(COMMANDS)}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------------ the phase recipe
def test_the_phase_table_of_training_md_is_conf_phase() -> None:
    """docs/training.md shows the phases side by side (the recipe at a glance); its lr, epochs and batch are those of
    conf/phase/<name>.yaml, so a changed default cannot leave the page behind."""
    from omegaconf import OmegaConf

    doc = PARSED[ROOT / "docs" / "training.md"]
    header = next(i for i, line in enumerate(doc.lines) if line.startswith("| phase | frozen | lr | epochs | batch |"))
    rows = {}
    for line in doc.lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].split()[0]] = (float(cells[2]), int(cells[3]), int(cells[4]))
    assert set(rows) == {"full", "1", "2", "3"}, rows
    problems = []
    for name, shown in rows.items():
        conf = OmegaConf.load(docgen.CONF_DIR / "phase" / f"{name}.yaml")
        actual = (float(conf.lr), int(conf.epochs), int(conf.batch_size))
        if shown != actual:
            problems.append(f"docs/training.md: phase {name} shows lr, epochs, batch {shown}; conf/phase/{name}.yaml "
                            f"has {actual}")
    assert not problems, "\n".join(problems)
