"""Preprocessing cache: resized copies of a dataset's images, written once, used by training automatically.

    python -m deepart prepare data=wikiart [any config override] [--workers N]

Every image of every split is decoded once (huge JPEGs at reduced size, any mode to RGB) and saved as a
JPEG whose shorter side is `data.resize_size` (256; smaller images are not enlarged), or, with
`data.square_pad=true`, square-padded to resize_size x resize_size. Copies go to
`<data.cache_dir>/<dataset>-<hash>/<s256|sq256>/` with a `manifest.json` recording each source file's size
and modification time. The work runs in parallel with a progress bar and is resumable: a copy that exists
and is newer than its source is kept. Unreadable files are listed in the manifest and reported.
Training reads the copies automatically when they are up to date (`data.cache=auto`; deepart/data/cache.py).
"""
from __future__ import annotations

import argparse
import logging
import sys

from deepart.core.config import compose_config
from deepart.core.errors import report_errors
from deepart.data.cache import prepare_cache
from deepart.data.loaders import load_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepart prepare",
                                     description="Write resized copies of a dataset's images (see docs/data.md).")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data=wikiart data.square_pad=true")
    parser.add_argument("--workers", type=int, default=None, help="processes (default min(8, CPU count))")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def go() -> dict:
        cfg = compose_config(args.overrides)
        table = load_table(cfg.data, cached=False)
        summary = prepare_cache(table, cfg.data, args.workers, progress=not args.no_progress)
        print(f"cached {summary['images']} images in {summary['cache']} ({summary['bad']} unreadable, "
              f"{summary['seconds']:.0f}s); training with the same data settings uses it automatically")
        return summary

    report_errors(go)
    return 0


if __name__ == "__main__":
    sys.exit(main())
