"""LoRA and embedding files in the layouts other tools write and read, and A1111's short hashes."""
import hashlib
import json
import re

import pytest
import torch
from adapters_kit import allow_transformers_peft, make_lora, peft_state_dicts
from safetensors.torch import load_file, save_file

from sdlab.adapters.embeddings import convert_embedding, embedding_hash, read_embedding, save_embedding
from sdlab.adapters.lora import describe_lora, export_kohya, load_lora, lora_hash, save_lora
from sdlab.cli import main
from sdlab.errors import UnsafeCheckpointError, ValidationError
from sdlab.models import load_pipeline

KOHYA_KEY = re.compile(r"^lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


@pytest.fixture(scope="module")
def sd1(family_dir):
    return load_pipeline(str(family_dir("sd1")), device="cpu")


@pytest.fixture(scope="module")
def sdxl(family_dir):
    return load_pipeline(str(family_dir("sdxl")), device="cpu")


def a1111_addnet_hash(path) -> str:
    """A1111's modules/hashes.py addnet_hash_safetensors, transcribed: SHA-256 of the bytes after the header."""
    h = hashlib.sha256()
    with open(path, "rb") as b:
        n = int.from_bytes(b.read(8), "little")
        b.seek(n + 8)
        for chunk in iter(lambda: b.read(1024 * 1024), b""):
            h.update(chunk)
    return h.hexdigest()


def test_save_lora_is_what_plain_diffusers_loads_with_its_alpha(sd1, family_dir, tmp_path, monkeypatch):
    allow_transformers_peft(monkeypatch)
    sds = peft_state_dicts(sd1, rank=4, alpha=2.0)
    path = save_lora(tmp_path / "out", sds["unet"], sds["text_encoder"], family="sd1", rank=4, alpha=2.0, metadata={"ss_output_name": "mine"})
    assert path.name == "pytorch_lora_weights.safetensors"
    fresh = load_pipeline(str(family_dir("sd1")), device="cpu")
    fresh.load_lora_weights(str(tmp_path / "out"))  # a directory, as diffusers' own scripts leave it
    layer = fresh.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"
    assert torch.equal(layer.lora_A["default_0"].weight, sds["unet"][key])
    assert layer.scaling["default_0"] == pytest.approx(2.0 / 4)  # the trained alpha, from the header
    te = fresh.text_encoder.encoder.layers[1].self_attn.v_proj
    assert torch.equal(te.lora_B["default_0"].weight, sds["text_encoder"]["encoder.layers.1.self_attn.v_proj.lora_B.weight"])
    assert describe_lora(path)["alphas"] == [2.0]
    with pytest.raises(ValidationError, match="rank: 0 is not valid"):
        save_lora(tmp_path / "bad", sds["unet"], family="sd1", rank=0)


def test_kohya_export_uses_kohyas_names_and_alphas(sd1, sdxl, tmp_path):
    src = make_lora(sd1, "sd1", tmp_path / "a" / "x.safetensors", alpha=2.0)
    out = load_file(export_kohya(src, tmp_path / "k.safetensors", family="sd1"))
    assert all(KOHYA_KEY.match(k) for k in out), [k for k in out if not KOHYA_KEY.match(k)][:3]
    # kohya sd-scripts networks/lora.py: prefix + "." + module name, dots to underscores; SD 1.x's text encoder is lora_te
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in out
    assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in out
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in out
    assert {float(v) for k, v in out.items() if k.endswith(".alpha")} == {2.0}
    assert len([k for k in out if k.endswith(".alpha")]) == len(out) // 3
    # SDXL: kohya's sdxl scripts name the original UNet's blocks (layers_per_block 1 here: 2 input blocks per level)
    src = make_lora(sdxl, "sdxl", tmp_path / "b" / "x.safetensors")
    out = load_file(export_kohya(src, tmp_path / "kx.safetensors", family="sdxl", unet_config=sdxl.unet.config))
    assert all(KOHYA_KEY.match(k) for k in out)
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in out  # down_blocks.0.attentions.0
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k.lora_down.weight" in out  # down_blocks.1.attentions.0
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_v.lora_up.weight" in out
    assert "lora_unet_output_blocks_3_1_transformer_blocks_0_attn1_to_q.lora_up.weight" in out  # up_blocks.1.attentions.1
    assert any(k.startswith("lora_te1_text_model_encoder_layers_") for k in out)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_") for k in out)
    state, alphas, _ = load_lora(tmp_path / "kx.safetensors", "sdxl", unet_config=sdxl.unet.config)  # back through diffusers
    assert any("down_blocks.1.attentions.0.transformer_blocks.1.attn2" in k for k in state) and alphas
    with pytest.raises(ValidationError, match="already in kohya's layout"):
        export_kohya(tmp_path / "kx.safetensors", tmp_path / "again.safetensors", family="sdxl", unet_config=sdxl.unet.config)


def test_lora_hash_is_a1111s(sd1, tmp_path):
    path = make_lora(sd1, "sd1", tmp_path / "x.safetensors", text=False)
    assert lora_hash(path) == a1111_addnet_hash(path)[:12]
    tensors = load_file(path)
    save_file(tensors, tmp_path / "y.safetensors", metadata={"format": "pt", "ss_output_name": "renamed"})
    assert lora_hash(tmp_path / "y.safetensors") == lora_hash(path)  # the header does not count, as in A1111
    assert embedding_hash(tmp_path / "y.safetensors") != embedding_hash(path)  # a whole-file hash does
    torch.save(tensors, tmp_path / "z.pt")
    assert lora_hash(tmp_path / "z.pt") == hashlib.sha256((tmp_path / "z.pt").read_bytes()).hexdigest()[:12]


def test_pickles_need_consent(tmp_path):
    torch.save({"string_to_param": {"*": torch.ones(2, 8)}}, tmp_path / "e.pt")
    torch.save({"lora_unet_x.lora_down.weight": torch.ones(2, 8)}, tmp_path / "l.pt")
    with pytest.raises(UnsafeCheckpointError, match="e.pt is a pickle file.* allow_pickle=True"):
        read_embedding(tmp_path / "e.pt")
    with pytest.raises(UnsafeCheckpointError, match="l.pt is a pickle file"):
        load_lora(tmp_path / "l.pt", "sd1")
    assert read_embedding(tmp_path / "e.pt", allow_pickle=True).n_vectors == 2


def test_a1111_embedding_layout_round_trips(tmp_path):
    vectors = torch.randn(3, 8)
    pt = save_embedding(tmp_path / "style.pt", "style", vectors, "a1111", step=500, checkpoint_hash="abc", checkpoint_name="m")
    raw = torch.load(pt, weights_only=True)  # plain tensors and dicts: what A1111's Embedding.save writes
    assert set(raw) == {"string_to_token", "string_to_param", "name", "step", "sd_checkpoint", "sd_checkpoint_name"}
    assert raw["string_to_token"] == {"*": 265} and torch.equal(raw["string_to_param"]["*"], vectors) and raw["step"] == 500
    emb = read_embedding(pt, allow_pickle=True)
    assert emb.name == "style" and torch.equal(emb.vectors["text_encoder"], vectors) and emb.step == 500
    assert emb.extra == {"sd_checkpoint": "abc", "sd_checkpoint_name": "m"}
    kohya = load_file(save_embedding(tmp_path / "k.safetensors", "k", vectors, "a1111"))
    assert list(kohya) == ["emb_params"]  # kohya's textual-inversion file, a one-tensor file to A1111
    diffusers_file = convert_embedding(pt, tmp_path / "d.safetensors", allow_pickle=True)
    assert list(load_file(diffusers_file)) == ["style"] and torch.equal(load_file(diffusers_file)["style"], vectors)
    sdxl = {"clip_l": torch.randn(2, 8), "clip_g": torch.randn(2, 12)}
    for fmt in ("diffusers", "a1111"):
        back = read_embedding(save_embedding(tmp_path / f"x-{fmt}.safetensors", "x", sdxl, fmt))
        assert back.widths() == {"text_encoder": 8, "text_encoder_2": 12}
        assert set(load_file(tmp_path / f"x-{fmt}.safetensors")) == {"clip_l", "clip_g"}  # as A1111 and kohya write SDXL's
    with pytest.raises(ValidationError, match="neither an A1111 .* nor a one-tensor"):
        save_file({"a": torch.ones(1, 8), "b": torch.ones(1, 8)}, tmp_path / "two.safetensors")
        read_embedding(tmp_path / "two.safetensors")


def test_a_saved_embedding_loads_in_plain_diffusers(sd1, family_dir, tmp_path):
    import diffusers

    vectors = torch.randn(2, sd1.text_encoder.config.hidden_size)
    path = save_embedding(tmp_path / "learned_embeds.safetensors", "shiny", vectors)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(family_dir("sd1")))
    pipe.load_textual_inversion(str(path), token="shiny")
    ids = pipe.tokenizer.convert_tokens_to_ids(["shiny", "shiny_1"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], vectors)


def test_cli_converts_and_refuses_in_one_line(sd1, tmp_path, capsys):
    src = make_lora(sd1, "sd1", tmp_path / "x.safetensors", text=False)
    assert main(["lora", "export-kohya", str(src), str(tmp_path / "k.safetensors")]) == 0
    assert all(KOHYA_KEY.match(k) for k in load_file(tmp_path / "k.safetensors"))
    assert main(["lora", "info", str(tmp_path / "k.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["format"] == "kohya/A1111" and info["hash"] == lora_hash(tmp_path / "k.safetensors") and info["ranks"] == [4]
    save_embedding(tmp_path / "e.pt", "e", torch.ones(1, 8), "a1111")
    for argv, message in ((["lora", "export-kohya", str(src), str(tmp_path / "o.safetensors"), "--family", "sd9"], "family: 'sd9' is not valid"),
                          (["embedding", "convert", str(tmp_path / "e.pt"), str(tmp_path / "o.safetensors")], "e.pt is a pickle file"),
                          (["embedding", "info", str(tmp_path / "missing.safetensors")], "no such file")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert main(["embedding", "convert", str(tmp_path / "e.pt"), str(tmp_path / "o.safetensors"), "--allow-pickle"]) == 0
    assert list(load_file(tmp_path / "o.safetensors")) == ["e"]
