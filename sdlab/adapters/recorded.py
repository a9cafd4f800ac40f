"""An image's recorded LoRAs and embeddings found again in the user's folders, before any model loads.

A1111 writes ``Lora hashes: "name: hash, ..."`` and ``TI hashes: "name: hash"`` (12 hex digits, see
:func:`sdlab.adapters.lora.lora_hash` / :func:`~sdlab.adapters.embeddings.embedding_hash`). When an
infotext is pasted, its Lora extension (``infotext_pasted``) looks each hash up among the files on
disk and rewrites ``<lora:NAME:`` in the prompt to that file's name, so a LoRA renamed since still
resolves. :func:`resolve_recorded` does the same for ``sdlab reproduce``, and refuses in one line
when a recorded LoRA or embedding is missing or its file's hash differs.
"""
from __future__ import annotations

import re

from ..errors import ValidationError
from .embeddings import embedding_hash
from .lora import lora_hash
from .networks import LORA_KINDS, AdapterFolders, parse_extra_networks, preflight

RE_LORA = re.compile("<lora:([^:]+):")  # A1111's re_lora


def recorded_pairs(text: str) -> dict[str, str]:
    """``"a: 1234, b: 5678"`` -> ``{"a": "1234", "b": "5678"}``, split as A1111's ``infotext_pasted`` splits it."""
    if not text or not str(text).strip():
        return {}
    pairs = [x.strip().split(":", 1) for x in str(text).split(",")]
    if any(len(p) != 2 for p in pairs):
        raise ValidationError(f"png: the recorded hashes {text!r} are not 'name: hash' pairs separated by commas")
    return {name.strip(): h.strip() for name, h in pairs}


def resolve_recorded(spec, folders: AdapterFolders | None):
    """``spec`` with its prompt's LoRA names mapped to the files whose hashes it recorded; checks only, no model."""
    loras = recorded_pairs(spec.extra.get("Lora hashes", ""))
    tis = recorded_pairs(spec.extra.get("TI hashes", ""))
    _, uses = parse_extra_networks(spec.prompt)
    tagged = [u for u in uses if u.kind in LORA_KINDS]
    if folders is None:
        if loras or tagged:
            names = ", ".join(loras) or ", ".join(u.name for u in tagged)
            raise ValidationError(f"png: it was made with the LoRA(s) {names}; pass the folder that holds them "
                                  "(adapters=AdapterFolders(lora_dirs=[DIR]) or --lora-dir DIR)")
        if tis:
            raise ValidationError(f"png: it was made with the embedding(s) {', '.join(tis)}; pass the folder that holds them "
                                  "(adapters=AdapterFolders(embedding_dirs=[DIR]) or --embeddings-dir DIR)")
        preflight(spec.prompt, None)  # a <hypernet:...> tag without a folder
        return spec
    prompt = spec.prompt
    if loras:
        files = folders.loras()
        by_hash = {lora_hash(path): path for path in files.values()}
        for name, recorded in loras.items():
            if recorded not in by_hash:
                there = files.get(name)
                found = f"; {there.name} there has hash {lora_hash(there)}" if there is not None else ""
                raise ValidationError(f"lora: the PNG was made with {name} (hash {recorded}), and no LoRA in "
                                      f"{', '.join(folders.lora_dirs)} has that hash{found}")

        def rename(m: re.Match) -> str:
            recorded = loras.get(m.group(1))
            return m.group(0) if recorded is None else f"<lora:{by_hash[recorded].stem}:"

        prompt = RE_LORA.sub(rename, prompt)
    if tis:
        files = folders.embeddings()
        for name, recorded in tis.items():
            path = files.get(name)
            if path is None:
                raise ValidationError(f"embedding: the PNG was made with {name} (hash {recorded}), and "
                                      f"{', '.join(folders.embedding_dirs) or 'no embeddings folder'} has no embedding of that name")
            actual = embedding_hash(path)
            if actual != recorded:
                raise ValidationError(f"embedding: {path.name} has hash {actual}, but the PNG was made with {name} of hash {recorded}")
    preflight(prompt, folders)  # every tag resolves to a file (a hypernetwork's by name), still before any model loads
    return spec.replace(prompt=prompt) if prompt != spec.prompt else spec
