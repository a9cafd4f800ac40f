"""The shapes-world CLIP tokenizer: a real CLIPTokenizer over the project's own vocabulary."""
from transformers import CLIPTokenizer

from sdlab.mini import tokenizer, world


def test_every_word_is_one_token_and_reloads_with_plain_transformers(tmp_path):
    tok = tokenizer.save_tokenizer(world.vocabulary(), tmp_path)
    plain = CLIPTokenizer.from_pretrained(tmp_path)
    for word in world.vocabulary():
        assert plain.tokenize(word) == [word + "</w>"], word
    ids = plain("a large red circle at the top left on a white background", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == plain.bos_token_id and ids[13] == plain.eos_token_id
    assert tok("A RED circle").input_ids == plain("a red circle").input_ids  # CLIP lower-cases


def test_unknown_text_still_tokenizes_into_bytes(tmp_path):
    tok = tokenizer.save_tokenizer(world.vocabulary(), tmp_path)
    pieces = tok.tokenize("zebra, 42!")
    assert "".join(p.replace("</w>", "") for p in pieces) == "zebra,42!"
    assert tok.unk_token_id not in tok("zebra").input_ids[1:-1]


def test_merges_do_not_split_earlier_words():
    vocab, merges = tokenizer.build_vocab(["red", "green", "reed"])
    assert {"red</w>", "green</w>", "reed</w>"} <= set(vocab)
    assert len(set(merges)) == len(merges)
