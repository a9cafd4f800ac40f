"""``sdlab train METHOD``: adapt a model to new images or a new condition.

Each method lives in a module ``sdlab/cli/_train_*.py`` defining
``register(methods)``, which adds its parser to ``methods`` and sets ``func``;
methods are discovered, so adding one never touches this file.
"""
from __future__ import annotations

import importlib
import pkgutil

from .. import cli


def register(sub) -> None:
    train = sub.add_parser("train", help="adapt a model: embedding, lora, dreambooth, hypernetwork, controlnet")
    methods = train.add_subparsers(dest="train_method", metavar="METHOD", parser_class=type(train))
    methods.required = True
    for info in sorted(pkgutil.iter_modules(cli.__path__), key=lambda m: m.name):
        if info.name.startswith("_train_"):
            importlib.import_module(f"{cli.__name__}.{info.name}").register(methods)
