"""The stages of a shapes-world training run, one module per idea.

- :mod:`.autoencoder`: the VAE, and the last fine-tune of its decoder;
- :mod:`.text`: the text encoder's attribute pretraining (then frozen);
- :mod:`.unet`: the UNet against the frozen text encoder;
- :mod:`.foreground`: where the shape is, which the shape-weighted losses need;
- :mod:`.common`: what every stage shares (seeded draws, schedule, checkpoint file);
  each logs to the run's ``train_log.jsonl`` (:mod:`sdlab.trainlog`).

:func:`sdlab.mini.train.train` runs them in order.
"""
