"""A1111's extra-network prompt syntax and the user's folders of LoRAs and embeddings.

Syntax (A1111 ``modules/extra_networks.py``): ``<KIND:arg1:arg2...>`` with ``KIND`` a word; every such
tag is cut out of the prompt before it is encoded, and its arguments split on ``:``; an argument
``key=value`` is named, the others positional. For ``lora`` (and its alias ``lyco``, as A1111's
built-in Lora extension registers it), as ``extra_networks_lora.py`` reads them: the name, then the
text-encoder multiplier (default 1), then the UNet multiplier (default: the text encoder's), or
``te=`` / ``unet=`` by name. ``hypernet``: the name and a strength. Only the positive prompt is
searched, as in A1111; tags of other kinds are removed and reported.

Embeddings are named plainly in the prompt (or the negative prompt), by their file's stem, matched
as A1111 matches them: on CLIP's tokens, so case-insensitively and only where the name is not part of
a longer word (see :func:`find_embedding_names`).

:class:`AdapterFolders` says where to look; names resolve to files by stem (or a LoRA's
``ss_output_name`` alias), recursively, as A1111 lists its ``models/Lora`` and ``embeddings`` folders.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError, ValidationError
from ..validation import Check, invalid, validate_fields
from .embeddings import EMBEDDING_SUFFIXES
from .lora import LORA_SUFFIXES

EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # A1111's re_extra_net
LORA_KINDS = ("lora", "lyco")
HYPERNET = "hypernet"


@dataclass(frozen=True)
class NetworkUse:
    """One ``<kind:name:...>`` tag: which network, and its multipliers (A1111's ``te``/``unet``)."""

    kind: str
    name: str
    te: float = 1.0
    unet: float = 1.0
    text: str = ""  # the tag as written


def _number(tag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise invalid("prompt", tag, "<lora:NAME>, <lora:NAME:WEIGHT> or <lora:NAME:TE:UNET> with numbers (te=/unet= by name)") from None


def parse_extra_networks(prompt: str) -> tuple[str, list[NetworkUse]]:
    """The prompt with every ``<kind:...>`` tag removed, and the tags in order (A1111's ``parse_prompt``)."""
    uses: list[NetworkUse] = []

    def found(m: re.Match) -> str:
        kind, items = m.group(1), m.group(2).split(":")
        positional = [i for i in items if len(i.split("=", 2)) != 2]
        named = dict(i.split("=", 1) for i in items if len(i.split("=", 2)) == 2)
        name = positional[0] if positional else items[0]
        te = _number(m.group(0), positional[1]) if len(positional) > 1 else 1.0
        te = _number(m.group(0), named["te"]) if "te" in named else te
        unet = _number(m.group(0), positional[2]) if len(positional) > 2 else te
        unet = _number(m.group(0), named["unet"]) if "unet" in named else unet
        uses.append(NetworkUse(kind, name.strip(), te, unet, m.group(0)))
        return ""

    return EXTRA_NETWORK.sub(found, prompt), uses


def has_extra_networks(prompt: str) -> bool:
    return EXTRA_NETWORK.search(prompt or "") is not None


# -- embeddings named in the text ---------------------------------------------------------------------
def _kind(c: str) -> str:
    """CLIP's pre-tokenizer classes: letters run together, each digit stands alone, other symbols run together."""
    if c.isspace():
        return "space"
    if c.isalpha():
        return "letter"
    return "digit" if c.isdigit() else "symbol"


def _pattern(name: str) -> re.Pattern:
    """``name`` where CLIP would tokenize it as it tokenizes ``name`` alone (A1111 matches token ids)."""
    before = {"letter": r"(?<![^\W\d_])", "symbol": r"(?<![^\w\s])", "digit": "", "space": ""}[_kind(name[0])]
    after = {"letter": r"(?![^\W\d_])", "symbol": r"(?![^\w\s])", "digit": "", "space": ""}[_kind(name[-1])]
    return re.compile(before + re.escape(name) + after, re.IGNORECASE)


def find_embedding_names(text: str, names) -> list[str]:
    """The names from ``names`` that occur in ``text`` (longest first, as A1111 prefers longer matches)."""
    found, rest = [], text
    for name in sorted(names, key=len, reverse=True):
        if name and _pattern(name).search(rest):
            found.append(name)
            rest = _pattern(name).sub(" ", rest)
    return found


def replace_embedding_names(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each embedding name replaced (longest names first)."""
    for name in sorted(replacements, key=len, reverse=True):
        text = _pattern(name).sub(lambda _m, r=replacements[name]: r, text)
    return text


# -- folders ----------------------------------------------------------------------------------------------
def _paths(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, os.PathLike)):
        return (os.fspath(value),)
    return tuple(os.fspath(v) for v in value)


@dataclass(frozen=True)
class AdapterFolders:
    """Where a generation finds the LoRAs and embeddings its prompt names (A1111's models/Lora and embeddings)."""

    lora_dirs: tuple = ()  # folders searched (recursively) for <lora:NAME:...>
    embedding_dirs: tuple = ()  # folders searched (recursively) for embedding names in the prompts
    hypernetwork_dirs: tuple = ()  # folders searched for <hypernet:NAME:STRENGTH> (A1111 .pt or sdlab .safetensors)
    allow_pickle: bool = False  # read .pt/.bin/.ckpt files (pickle runs code from the file)

    _parameter_constraints = {
        "lora_dirs": [Check(lambda ds: all(Path(d).is_dir() for d in ds), "existing folders")],
        "embedding_dirs": [Check(lambda ds: all(Path(d).is_dir() for d in ds), "existing folders")],
        "hypernetwork_dirs": [Check(lambda ds: all(Path(d).is_dir() for d in ds), "existing folders")],
        "allow_pickle": [bool],
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_dirs", _paths(self.lora_dirs))
        object.__setattr__(self, "embedding_dirs", _paths(self.embedding_dirs))
        object.__setattr__(self, "hypernetwork_dirs", _paths(self.hypernetwork_dirs))
        validate_fields(self)

    def _files(self, kind: str) -> dict[str, Path]:
        """``{stem: path}`` of the files with the kind's suffixes, listed afresh (files added since are seen); first folder wins."""
        dirs, suffixes = {"lora": (self.lora_dirs, LORA_SUFFIXES), "embedding": (self.embedding_dirs, EMBEDDING_SUFFIXES),
                          HYPERNET: (self.hypernetwork_dirs, (".pt", ".safetensors"))}[kind]
        files: dict[str, Path] = {}
        for d in dirs:
            for path in sorted(Path(d).rglob("*")):
                if path.is_file() and path.suffix.lower() in suffixes and path.stat().st_size > 0:
                    files.setdefault(path.stem, path)
        return files

    def loras(self) -> dict[str, Path]:
        return dict(self._files("lora"))

    def embeddings(self) -> dict[str, Path]:
        return dict(self._files("embedding"))

    def lora(self, name: str) -> Path:
        """The file for ``<lora:name:...>``: by stem, else by a safetensors file's ``ss_output_name`` alias."""
        files = self._files("lora")
        if name in files:
            return files[name]
        for path in files.values():
            if path.suffix == ".safetensors" and _alias(path) == name:
                return path
        where = ", ".join(self.lora_dirs) or "no LoRA folder"
        if not self.lora_dirs:
            raise ValidationError(f"prompt: <lora:{name}:...> names a LoRA, but no LoRA folder was given; "
                                  "valid: AdapterFolders(lora_dirs=[DIR]) or --lora-dir DIR")
        raise ModelNotFoundError(f"lora: no LoRA named {name!r} in {where}; found: {', '.join(sorted(files)[:8]) or 'none'}")

    def hypernetwork(self, name: str) -> Path:
        """The file for ``<hypernet:name:...>``, by stem."""
        files = self._files(HYPERNET)
        if name in files:
            return files[name]
        if not self.hypernetwork_dirs:
            raise ValidationError(f"prompt: <hypernet:{name}:...> names a hypernetwork, but no hypernetwork folder was given; "
                                  "valid: AdapterFolders(hypernetwork_dirs=[DIR]) or --hypernetwork-dir DIR")
        raise ModelNotFoundError(f"hypernet: no hypernetwork named {name!r} in {', '.join(self.hypernetwork_dirs)}; "
                                 f"found: {', '.join(sorted(files)[:8]) or 'none'}")


def _alias(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("ss_output_name")
    except Exception:  # a damaged file has no alias; loading it later says what is wrong
        return None


def hypernetworks(prompt: str, folders: "AdapterFolders | None") -> list[tuple[NetworkUse, Path]]:
    """The prompt's ``<hypernet:NAME:STRENGTH>`` tags resolved to files (at most one, applied through
    :mod:`sdlab.adapters.hypernetwork` at the tag's strength, its first number, as A1111 reads it)."""
    uses = [u for u in parse_extra_networks(prompt)[1] if u.kind == HYPERNET]
    if len(uses) > 1:
        raise invalid("prompt", " ".join(u.text for u in uses), "at most one <hypernet:NAME:STRENGTH> per prompt")
    if uses and folders is None:
        raise ValidationError(f"prompt: {uses[0].text} names a hypernetwork, but no hypernetwork folder was given; "
                              "valid: AdapterFolders(hypernetwork_dirs=[DIR]) or --hypernetwork-dir DIR")
    return [(u, folders.hypernetwork(u.name)) for u in uses]


def preflight(prompt: str, folders: "AdapterFolders | None") -> list[tuple[NetworkUse, Path]]:
    """The prompt's LoRA tags resolved to files (and its hypernetwork's), before any model loads; one line for a
    tag that cannot apply."""
    _, uses = parse_extra_networks(prompt)
    hypernetworks(prompt, folders)
    loras = [u for u in uses if u.kind in LORA_KINDS]
    if loras and folders is None:
        raise ValidationError(f"prompt: {loras[0].text} names a LoRA, but no LoRA folder was given; "
                              "valid: generate(..., adapters=AdapterFolders(lora_dirs=[DIR])) or --lora-dir DIR")
    return [(u, folders.lora(u.name)) for u in loras]


def toggle_lora(prompt: str, name: str, weight: float = 1.0) -> str:
    """A1111's LoRA card click: append ``<lora:name:weight>``, or remove the name's tag when it is already there."""
    tag = re.compile(r"\s*<(?:lora|lyco):" + re.escape(name) + r"(?::[^>]*)?>")
    if tag.search(prompt):
        return tag.sub("", prompt)
    return f"{prompt.rstrip()} <lora:{name}:{weight:g}>".lstrip()


def toggle_word(prompt: str, name: str) -> str:
    """An embedding card click: append its name (after a comma), or remove it when the prompt already names it."""
    pattern = _pattern(name)
    if pattern.search(prompt):
        return re.sub(r"\s*,\s*,", ",", pattern.sub("", prompt)).strip(" ,")
    return f"{prompt.rstrip()}, {name}" if prompt.strip() else name
