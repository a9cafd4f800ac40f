"""The conditioning lab: train a ControlNet on images, their captions and condition maps; measure what control does.

- :mod:`~sdlab.conditioning.train`: ControlNet training (Zhang et al. 2023) with diffusers' own
  ``ControlNetModel.from_unet``: a trainable copy of the UNet's encoder joined to the locked UNet by
  zero convolutions, the loss in the model's own prediction type; resumable, Cancel via the callback.
- :mod:`~sdlab.conditioning.measure`: control fidelity (IoU of the control's region and the generated
  one) against scale, start/end windows and training steps; the zero-convolution property; prompt-control
  conflicts; keeping an image's layout while the prompt changes (the shapes world's depth2img).

A lab: it imports the core and the ground floor. The shapes world reaches it as data (images, captions,
condition maps, truth masks) and callables (a region finder), handed in by the CLI, panels and notebooks.
"""
