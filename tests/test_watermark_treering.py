"""Tree-Ring mechanics on a tiny untrained shapes-world-shaped pipeline (8x8 latents), built in-process."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdlab.models import SHIPPED_DIR as REAL_PIPELINE


def noise_scheduler(prediction_type: str):
    """The shapes world's schedule (v-prediction, ~zero terminal SNR, trailing), or SD 1.x's (epsilon, leading)."""
    from diffusers import DDPMScheduler

    from sdlab.mini import model as model_lib

    if prediction_type == "v_prediction":
        return model_lib.build_noise_scheduler()
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         prediction_type="epsilon", clip_sample=False, steps_offset=1, timestep_spacing="leading")


@pytest.fixture(scope="module", params=["epsilon", "v_prediction"])
def pipe(request, tmp_path_factory):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from sdlab.mini import model as model_lib
    from sdlab.mini import tokenizer as tokenizer_lib
    from sdlab.mini import world

    torch.manual_seed(0)
    cfg = model_lib.ModelConfig(unet_channels=(32, 64), unet_attention=(True, True), text_layers=1, text_width=32, vae_channels=(8, 8, 8, 8))
    tok = tokenizer_lib.save_tokenizer(world.vocabulary(), tmp_path_factory.mktemp("tok"))
    scheduler = noise_scheduler(request.param)
    assert scheduler.config.prediction_type == request.param
    return StableDiffusionPipeline(
        vae=model_lib.build_vae(cfg).eval(), text_encoder=model_lib.build_text_encoder(cfg, tok).eval(), tokenizer=tok,
        unet=model_lib.build_unet(cfg).eval(), scheduler=DDIMScheduler.from_config(scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


@pytest.fixture(scope="module")
def tree(pipe):
    from sdlab.watermark.treering import TreeRing

    return TreeRing(pipe, steps=4, guidance=1.0)


def test_key_is_real_rings_in_one_channel(tree):
    assert (tree.latent_size, tree.radius, int(tree.mask.sum()), int(tree.half.sum())) == (8, 3, 29, 15)
    marked, clean = tree.noise(3), tree.noise(3, marked=False)
    ch = tree.channel
    assert ch == tree.latent_channels - 1
    assert torch.equal(marked[0, :ch], clean[0, :ch])  # only the key channel changes
    assert not torch.equal(marked[0, ch], clean[0, ch])
    spectrum = np.fft.fftshift(np.fft.fft2(marked[0, ch].double().numpy()))
    assert np.allclose(spectrum[tree.mask], tree.key[tree.mask], atol=1e-4)  # the key is exactly there: no imaginary part lost
    outside = ~tree.mask
    clean_spec = np.fft.fftshift(np.fft.fft2(clean[0, ch].double().numpy()))
    assert np.allclose(spectrum[outside], clean_spec[outside], atol=1e-4)
    assert 0.6 < float(marked.std()) < 1.4


def test_pvalue_separates_key_from_noise(tree):
    marked_p = [tree.statistics(tree.noise(s))[1] for s in range(5)]
    clean_p = np.array([tree.statistics(tree.noise(s, marked=False))[1] for s in range(200)])
    assert max(marked_p) < 1e-20
    assert 0.01 <= (clean_p <= 0.05).mean() <= 0.15  # roughly uniform under the null: ~5 % below 0.05
    assert 0.3 <= (clean_p <= 0.5).mean() <= 0.7
    assert clean_p.min() > 1e-5


def test_ddim_inversion_recovers_the_key(tree):
    """Generate latents with DDIM, invert them: the key comes back; unmarked noise does not match it."""
    stats, errors = {}, {}
    for marked in (True, False):
        start = tree.noise(1, marked)
        with torch.no_grad():
            z0 = tree.ddim(prompt="", latents=start, num_inference_steps=tree.steps, guidance_scale=1.0,
                           output_type="latent").images
        recovered = tree.invert_latents(z0)
        errors[marked] = float((recovered - start).norm() / start.norm())
        stats[marked] = tree.statistics(recovered)
    assert tree.ddim.scheduler.config.prediction_type in ("epsilon", "v_prediction")
    assert stats[True][1] < 1e-6 < stats[False][1]
    assert stats[True][0] < 0.5 * stats[False][0]
    assert max(errors.values()) < 0.5  # measured: 13 % (epsilon), 28-29 % (v-prediction, 4 steps)


def test_fixed_point_refinement_makes_inversion_exact(tree):
    """Each refinement round re-evaluates the prediction at the current estimate of z_t; on a DDIM trajectory
    the estimate converges to the starting noise, for either prediction type."""
    from dataclasses import replace

    start = tree.noise(2)
    with torch.no_grad():
        z0 = tree.ddim(prompt="", latents=start, num_inference_steps=tree.steps, guidance_scale=1.0, output_type="latent").images
    errors = [float((replace(tree, inversion_refine=k).invert_latents(z0) - start).norm() / start.norm()) for k in (0, 2, 20)]
    # measured on seed 2: epsilon 15 %, 1.6 %, 0 %; v-prediction (4 trailing steps to ~zero SNR) 44 %, 25 %, 10 %
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.4 * errors[0]
    from sdlab.errors import ValidationError

    with pytest.raises(ValidationError, match="inversion_refine"):
        replace(tree, inversion_refine=-1)


def test_treering_runs_through_the_battery(tree):
    from sdlab.watermark import battery

    rows = battery({"seed0": None, "seed1": None}, methods=[tree], attacks=["jpeg"], strengths={"jpeg": [50]}, progress=False)
    assert len(rows) == 4 and set(rows.method) == {"treering"}
    assert rows.bit_accuracy.isna().all() and rows.score.notna().all() and rows.clean_score.notna().all()
    assert all(img.shape == (64, 64, 3) for img in tree.pair(0, "x"))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="the shapes world's sampling flow contracts, so DDIM inversion does not recover "
                   "the starting noise, and the VAE round trip erases what an exact per-step solve finds (notebook 05, "
                   "section 8, has the figures, and Stable Signature, an in-generation mark that needs no inversion)")
def test_real_shapes_world_marks_are_found():
    from diffusers import StableDiffusionPipeline

    from sdlab.watermark.treering import TreeRing

    tree = TreeRing(StableDiffusionPipeline.from_pretrained(REAL_PIPELINE), steps=20)
    marked = [tree.detect(tree.generate(s))["p_value"] for s in range(3)]
    clean = [tree.detect(tree.generate(s, marked=False))["p_value"] for s in range(3)]
    assert max(marked) < 0.01 < min(clean)
