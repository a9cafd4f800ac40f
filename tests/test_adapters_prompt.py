"""A1111's extra-network tags and embedding names in prompts, parsed by A1111's rules."""
import re

import pytest

from sdlab.adapters.networks import AdapterFolders, find_embedding_names, parse_extra_networks, preflight, replace_embedding_names
from sdlab.errors import ModelNotFoundError, ValidationError


def a1111_parse_prompt(prompt):
    """modules/extra_networks.py parse_prompt + ExtraNetworkParams, transcribed (comment lines aside)."""
    res = {}

    def found(m):
        items = m.group(2).split(":")
        positional = [i for i in items if len(i.split("=", 2)) != 2]
        named = dict(i.split("=", 2) for i in items if len(i.split("=", 2)) == 2)
        res.setdefault(m.group(1), []).append((items, positional, named))
        return ""

    return re.sub(r"<(\w+):([^>]+)>", found, prompt), res


@pytest.mark.parametrize("prompt", [
    "a cat <lora:style:0.6>, night", "<lora:a:1><lora:b:0.5:0.25> x", "x <lyco:l:0.3> <hypernet:h:0.5> <foo:bar>",
    "<lora:n:te=0.2:unet=0.9>", "(a <lora:x:1>:1.2)", "no tags <here> or <:x> or <lora:>",
])
def test_the_text_left_and_the_tags_found_are_a1111s(prompt):
    text, uses = parse_extra_networks(prompt)
    a1111_text, a1111 = a1111_parse_prompt(prompt)
    assert text == a1111_text
    assert sorted((u.kind, u.name) for u in uses) == sorted((k, p[0]) for k, lst in a1111.items() for _, p, _ in lst)


def test_lora_multipliers_as_extra_networks_lora_reads_them():
    uses = parse_extra_networks("<lora:a> <lora:b:0.5> <lora:c:0.5:1.5> <lora:d:te=0.2> <lora:e:0.7:unet=0.1> <lyco:f:2>")[1]
    assert [(u.name, u.te, u.unet) for u in uses] == [("a", 1.0, 1.0), ("b", 0.5, 0.5), ("c", 0.5, 1.5), ("d", 0.2, 0.2),
                                                      ("e", 0.7, 0.1), ("f", 2.0, 2.0)]
    assert uses[-1].kind == "lyco"
    with pytest.raises(ValidationError, match=r"prompt: '<lora:x:strong>' is not valid; valid: <lora:NAME>"):
        parse_extra_networks("a <lora:x:strong>")


def test_embedding_names_match_where_clip_would_see_the_same_tokens():
    names = ["shiny", "shiny-style", "v2", "cat"]
    assert find_embedding_names("a Shiny cat", names) == ["shiny", "cat"]  # CLIP lower-cases
    assert find_embedding_names("a shinycat, shinys", names) == []  # inside a longer word: other tokens
    assert find_embedding_names("(shiny-style:1.2), 2 cats", names) == ["shiny-style"]  # longest first, its text consumed
    assert find_embedding_names("art v2", names) == ["v2"] and find_embedding_names("artv2", names) == []
    assert replace_embedding_names("Shiny cat, shiny-style", {"shiny": "<a>", "shiny-style": "<b> <c>"}) == "<a> cat, <b> <c>"


def test_folders_resolve_names_and_refuse_in_one_line(tmp_path):
    (tmp_path / "l" / "sub").mkdir(parents=True)
    (tmp_path / "l" / "sub" / "style.safetensors").write_bytes(b"x" * 16)
    (tmp_path / "l" / "empty.safetensors").write_bytes(b"")  # A1111 skips empty files
    folders = AdapterFolders(lora_dirs=[tmp_path / "l"])
    assert folders.lora("style") == tmp_path / "l" / "sub" / "style.safetensors"
    assert [p.name for _, p in preflight("a <lora:style:1>", folders)] == ["style.safetensors"]
    with pytest.raises(ModelNotFoundError, match="no LoRA named 'empty' .* found: style$"):
        folders.lora("empty")
    with pytest.raises(ValidationError, match="no LoRA folder was given"):
        preflight("a <lora:style:1>", None)
    with pytest.raises(ValidationError, match="no hypernetwork folder was given"):
        preflight("a <hypernet:h:1>", folders)
    with pytest.raises(ValidationError, match="at most one <hypernet"):
        preflight("<hypernet:a:1> <hypernet:b:1>", folders)
    assert preflight("a cat <unknown:x>", None) == []  # A1111 skips unknown kinds
