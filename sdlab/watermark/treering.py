"""Tree-Ring: a watermark put into the initial noise, found again by DDIM inversion (Wen et al. 2023).

The key is a ring pattern in the centred 2-D Fourier transform of one latent
channel of the starting noise: inside radius ``radius`` every ring (integer
distance from the centre) holds one real value. A real value that is the
same on a ring is symmetric under k -> -k, so the noise stays real without
dropping an imaginary part. Generation then runs as usual (DDIM). To detect,
encode the image with the VAE, run DDIM backwards to the noise with an empty
prompt, and compare the Fourier coefficients under the mask with the key.

p-value (after the paper): with sigma^2 = mean |y|^2 at the same frequencies
in the other (unmarked) channels, a clean image's coefficients y are complex
Gaussian, so
eta = sum |y - key|^2 / (sigma^2 / 2) follows a noncentral chi^2 with
2|M| degrees of freedom and noncentrality sum key^2 / (sigma^2 / 2); a small
eta (close to the key) is unlikely: p = P(chi^2 <= eta). Only one of each
conjugate pair (y(k), y(-k)) is counted, since the other repeats it.

Works with any diffusers ``StableDiffusionPipeline``; the shapes world's
latents are 4x16x16, so its rings have radius 3 (SD's 64x64 latents use 10).

Detection needs an image that still holds its starting noise, and the shapes
world's do not. Its prompts fix nearly everything about the picture, so its
sampling flow contracts (nearby noises end in nearly the same latents), and
running a contracting flow backwards magnifies each step's error; even where an
exact per-step solve recovers the key from the generated latents, the VAE's
decode-encode round trip moves the latents far enough to erase it. So Tree-Ring
is not found on the shapes world (``tests/test_watermark_treering.py`` keeps
that as a strict xfail; notebook 05, section 8, has the figures). The paper
finds it through SD 2.1's VAE with plain inversion, which needs SD weights and
is not tested here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..images import to_tensor
from ..validation import NON_NEGATIVE_INT, POSITIVE_INT, Interval, invalid, validate_fields

DEFAULT_PROMPTS = (
    "a red circle on a white background", "a blue square in the top left", "a large yellow triangle",
    "a small green cross on a black background", "a purple circle at the bottom", "an orange square on a teal background",
)


def ring_mask(size: int, radius: int) -> np.ndarray:
    """Boolean (size, size) disc of integer radius around the centre of an fftshifted spectrum."""
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    return (yy - c) ** 2 + (xx - c) ** 2 <= radius**2


def _half(size: int, mask: np.ndarray) -> np.ndarray:
    """The mask restricted to one of each conjugate pair (k, -k) around the centre."""
    c = size // 2
    yy, xx = np.mgrid[:size, :size]
    dy, dx = yy - c, xx - c
    return mask & ((dy > 0) | ((dy == 0) & (dx >= 0)))


@dataclass
class TreeRing:
    """A Tree-Ring key for one pipeline; :meth:`generate` marks, :meth:`detect` tests; also a battery scheme."""

    pipe: Any
    key_seed: int = 0
    channel: int = -1
    radius: int | None = None
    steps: int = 25
    inversion_steps: int | None = None
    inversion_refine: int = 0  # fixed-point rounds per inversion step (each one more UNet call); see invert_latents
    guidance: float = 5.0
    prompts: Sequence[str] = DEFAULT_PROMPTS
    name: str = "treering"
    _key: np.ndarray | None = field(default=None, repr=False)

    _parameter_constraints = {
        "key_seed": [NON_NEGATIVE_INT], "channel": [Interval(int)], "radius": [Interval(int, 1, None), None],
        "steps": [POSITIVE_INT], "inversion_steps": [POSITIVE_INT, None], "inversion_refine": [NON_NEGATIVE_INT],
        "guidance": [Interval(float)],
    }

    def __post_init__(self) -> None:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        validate_fields(self)
        unet = self.pipe.unet
        self.latent_channels = self.pipe.vae.config.latent_channels
        self.latent_size = unet.config.sample_size if isinstance(unet.config.sample_size, int) else unet.config.sample_size[0]
        self.image_size = self.latent_size * self.pipe.vae_scale_factor
        s = self.latent_size
        if self.radius is None:
            self.radius = min(max(3, round(s * 10 / 64)), s // 2 - 1)
        if not 1 <= self.radius <= s // 2 - 1:
            raise invalid("radius", self.radius, f"a whole number in [1, {s // 2 - 1}] for {s}x{s} latents")
        self.channel = self.channel % self.latent_channels
        self.mask = ring_mask(s, self.radius)
        self.half = _half(s, self.mask)
        rng = np.random.default_rng(self.key_seed)
        key = np.zeros((s, s))
        c = s // 2
        yy, xx = np.mgrid[:s, :s]
        dist = np.rint(np.sqrt((yy - c) ** 2 + (xx - c) ** 2))
        for r in range(self.radius + 1):  # one real value per ring, scaled like an unnormalised FFT of N(0, 1) noise
            key[dist == r] = rng.normal(scale=s)
        self.key = np.where(self.mask, key, 0.0)
        self.ddim = StableDiffusionPipeline(**{**self.pipe.components, "scheduler": DDIMScheduler.from_config(self.pipe.scheduler.config)})
        self.ddim.set_progress_bar_config(disable=True)

    # -- noise ---------------------------------------------------------------------------------
    def noise(self, seed: int, marked: bool = True):
        """Starting latents (1, C, s, s) drawn on the CPU from ``seed``, with the key in when ``marked``."""
        import torch

        g = torch.Generator("cpu").manual_seed(seed)
        z = torch.randn((1, self.latent_channels, self.latent_size, self.latent_size), generator=g)
        if marked:
            spectrum = np.fft.fftshift(np.fft.fft2(z[0, self.channel].double().numpy()))
            spectrum[self.mask] = self.key[self.mask]
            z[0, self.channel] = torch.from_numpy(np.fft.ifft2(np.fft.ifftshift(spectrum)).real).float()
        return z

    def generate(self, seed: int, prompt: str | None = None, marked: bool = True) -> np.ndarray:
        """One RGB uint8 image from the pipeline (DDIM), with or without the key."""
        import torch

        prompt = prompt if prompt is not None else self.prompts[seed % len(self.prompts)]
        with torch.no_grad():
            out = self.ddim(prompt=prompt, latents=self.noise(seed, marked), num_inference_steps=self.steps,
                            guidance_scale=self.guidance, height=self.image_size, width=self.image_size, output_type="np")
        return (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)

    # -- detection -----------------------------------------------------------------------------
    def invert(self, image: np.ndarray):
        """Estimated starting latents of ``image``: VAE encode, then DDIM backwards with an empty prompt."""
        import torch
        from PIL import Image

        if image.shape[:2] != (self.image_size, self.image_size):
            image = np.asarray(Image.fromarray(image).resize((self.image_size, self.image_size), Image.BICUBIC))
        x = to_tensor(image)
        vae = self.pipe.vae
        with torch.no_grad():
            z = vae.encode(x.to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
            return self.invert_latents(z.float())

    def invert_latents(self, z):
        """DDIM inversion of clean latents z0 to z_T (unconditional: empty prompt, no guidance).

        Each step s -> t (s < t) undoes the DDIM step t -> s that generation took. That step maps z_t with the
        model's prediction p = unet(z_t, t) to ``z_s = sqrt(a_s) x0 + sqrt(1 - a_s) eps``, where (eps, x0) come
        from p and z_t at level a_t (:func:`sdlab.prediction.eps_and_x0`, any prediction type), which is linear in
        z_t for a fixed p; so z_t = (z_s - B p) / A. z_t is unknown, so p is first taken at z_s, then refined by
        ``inversion_refine`` fixed-point rounds (p at the last estimate of z_t).

        With epsilon prediction and no refinement this is the usual inversion (eps from z_s, x0 re-derived).
        With v-prediction, converting p at the latents' level a_s instead (as DDIMInverseScheduler does) mixes
        two noise levels, which holding p fixed avoids. Refinement converges on a DDIM trajectory of a small
        model (the tests check it) but need not on a trained one, where it can raise the error: it is off by default.
        """
        import torch

        from ..prediction import eps_and_x0

        sched = self.ddim.scheduler
        sched.set_timesteps(self.inversion_steps or self.steps)
        timesteps = sched.timesteps.flip(0)  # small t to large t
        alphas = sched.alphas_cumprod
        kind = sched.config.get("prediction_type", "epsilon")
        one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            context = self.ddim.encode_prompt("", "cpu", 1, False)[0]
            prev_alpha = torch.as_tensor(sched.final_alpha_cumprod, dtype=torch.float64)
            for t in timesteps:
                alpha = alphas[t].double()
                eps_z, x0_z = eps_and_x0(zero, one, alpha, kind)  # d(eps)/dz, d(x0)/dz at level a_t
                eps_p, x0_p = eps_and_x0(one, zero, alpha, kind)  # d(eps)/dp, d(x0)/dp
                a = float(prev_alpha.sqrt() * x0_z + (1 - prev_alpha).sqrt() * eps_z)
                b = float(prev_alpha.sqrt() * x0_p + (1 - prev_alpha).sqrt() * eps_p)
                z_t = z
                for _ in range(1 + self.inversion_refine):
                    pred = self.pipe.unet(z_t, t, encoder_hidden_states=context).sample
                    z_t = (z - b * pred) / a
                z = z_t
                prev_alpha = alpha
        return z

    def statistics(self, latents) -> tuple[float, float]:
        """(mean |y - key| over the mask, p-value) for inverted latents (1, C, s, s)."""
        from scipy.stats import ncx2

        spectra = np.fft.fftshift(np.fft.fft2(latents[0].double().numpy()), axes=(-2, -1))
        y = spectra[self.channel]
        distance = float(np.abs(y[self.mask] - self.key[self.mask]).mean())
        yh, kh = y[self.half], self.key[self.half]
        # The noise level comes from the same frequencies in the unmarked channels, so it does not
        # depend on y (estimating it from y itself, as the paper does, pins eta near its mean).
        others = np.delete(spectra, self.channel, axis=0)
        reference = others[:, self.half] if len(others) else y[~self.mask]
        var = max(float(np.mean(np.abs(reference) ** 2)), 1e-12) / 2
        eta = float(np.sum(np.abs(yh - kh) ** 2) / var)
        p = float(ncx2.cdf(eta, df=2 * len(yh), nc=float(np.sum(kh**2) / var)))
        return distance, p

    def detect(self, image: np.ndarray) -> dict:
        """Distance to the key, p-value, and whether p <= 1 %."""
        distance, p = self.statistics(self.invert(image))
        return {"distance": distance, "p_value": p, "detected": p <= 0.01}

    # -- battery scheme ------------------------------------------------------------------------
    def pair(self, index: int, name: str, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, marked) generated from the same seed and prompt; the source image is not used."""
        return self.generate(index, marked=False), self.generate(index, marked=True)

    def score(self, image: np.ndarray) -> tuple[float, float]:
        _, p = self.statistics(self.invert(image))
        return float("nan"), float(-np.log10(max(p, 1e-300)))

    def signature(self) -> dict:
        return {"method": self.name, "key_seed": self.key_seed, "radius": self.radius, "channel": self.channel,
                "steps": self.steps, "inversion_steps": self.inversion_steps, "inversion_refine": self.inversion_refine,
                "guidance": self.guidance,
                "prompts": list(self.prompts), "unet_params": int(sum(p.numel() for p in self.pipe.unet.parameters()))}
