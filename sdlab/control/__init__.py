"""Generating with control: condition maps (``control.preprocess``), ControlNet specs and pipelines, depth2img.

A core package: it imports the ground floor and the core only. Training a
ControlNet is the conditioning lab's (``sdlab.conditioning``). Import the
modules themselves (``from sdlab.control.preprocess import preprocess``).
"""
