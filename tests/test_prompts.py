"""A1111 prompt-weighting syntax, parsed as A1111 parses it."""
import pytest

from sdlab.prompts import parse, tokenize_weighted


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a red circle", [("a red circle", 1.0)]),
        ("a (red) circle", [("a ", 1.0), ("red", 1.1), (" circle", 1.0)]),
        ("a ((red)) circle", [("a ", 1.0), ("red", pytest.approx(1.21)), (" circle", 1.0)]),
        ("a [red] circle", [("a ", 1.0), ("red", pytest.approx(1 / 1.1)), (" circle", 1.0)]),
        ("a (red:1.4) and blue circle", [("a ", 1.0), ("red", 1.4), (" and blue circle", 1.0)]),
        (r"a \(red\) circle", [("a (red) circle", 1.0)]),
        ("a red BREAK blue circle", [("a red", 1.0), ("BREAK", -1.0), ("blue circle", 1.0)]),
        ("(unclosed", [("unclosed", 1.1)]),
    ],
)
def test_parse(text, expected):
    assert parse(text) == expected


def test_long_prompts_are_chunked_at_75_tokens(tiny_pipeline_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_pipeline_dir / "tokenizer")
    chunks = tokenize_weighted(tok, " ".join(["red"] * 80))
    assert [len(c) for c in chunks] == [75, 5]
    broken = tokenize_weighted(tok, "red circle BREAK (blue:1.5) square")
    assert [len(c) for c in broken] == [2, 2] and broken[1][0][1] == 1.5
