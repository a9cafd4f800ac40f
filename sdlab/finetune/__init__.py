"""Fine-tuning by end users: textual inversion, LoRA, DreamBooth and hypernetworks on one training skeleton.

A lab: it takes a pipeline, images and captions (and, to measure, a checker callable);
it never imports the shapes world. ``common`` holds the loop every method shares; one
module per method; ``evaluate`` measures what a method learned and what it broke.
"""
