"""`python -m deepart <command> [args ...]`: the package's commands by name.

    python -m deepart predict ckpt=<run or export folder> images=<files>   # deepart.inference.predict
    python -m deepart export ckpt=<run> out=<folder>                        # deepart.inference.export
    python -m deepart app model=<export folder, run dir or .pt>             # deepart.inference.app
    python -m deepart index model=<...> images=<folder> out=<dir>            # deepart.inference.index
    python -m deepart similar index=<dir> image=<file> k=8                  # deepart.inference.similar
    python -m deepart report <sweep dir> [...]                              # deepart.report
    python -m deepart download wikiart [--images | --from <file>]           # deepart.data.download
    python -m deepart prepare data=<option>                                 # deepart.data.prepare
    python -m deepart paintings --from <WikiArt copy>                       # deepart.data.paintings

Each command is also its module: `python -m deepart.inference.predict ...` is the same as the first line.
"""
from __future__ import annotations

import runpy
import sys

COMMANDS = {
    "predict": ("deepart.inference.predict", "a model's predictions for image files"),
    "export": ("deepart.inference.export", "a run's model as an export folder (safetensors, config, card, ONNX)"),
    "app": ("deepart.inference.app", "the web page for a model"),
    "index": ("deepart.inference.index", "an index of a collection's embeddings, for similar paintings"),
    "similar": ("deepart.inference.similar", "the paintings of an index most like an image"),
    "report": ("deepart.report", "the report of one or more sweep dirs"),
    "download": ("deepart.data.download", "WikiArt's label files and images"),
    "prepare": ("deepart.data.prepare", "the resized preprocessing cache of a data option"),
    "paintings": ("deepart.data.paintings", "the painting set of experiment=paintings, from a WikiArt copy"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}  ({module})" for name, (module, what) in COMMANDS.items()]
    return "usage: python -m deepart <command> [args ...]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; one of: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m deepart {name}", *argv[1:]]
    runpy.run_module(COMMANDS[name][0], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
