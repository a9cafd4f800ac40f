"""The ``sdlab`` command line.

Each module in this package is one verb group and defines
``register(subparsers)``, which adds its parsers and sets ``func`` on each;
modules are discovered, so adding a verb never touches this file. Modules
import torch and friends inside their handlers, so ``sdlab --help`` is fast.

Any :class:`~sdlab.errors.SdlabError` becomes one line ``error: ...`` on
stderr and exit status 2, never a traceback; so do argument errors.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from ..errors import SdlabError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with sdlab's one-line error format."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="sdlab", description="A research and teaching workbench for Stable Diffusion.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # transformers warns at import about torchvision, which sdlab does not use; keep the CLI's stderr for sdlab's
    # own one-line errors (export TRANSFORMERS_VERBOSITY=warning to see them again)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SdlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
