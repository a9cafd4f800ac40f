"""sdlab: a Jupyter research and teaching workbench for Stable Diffusion.

The core (this package minus ``sdlab.widgets``) imports without Jupyter.
"""
__version__ = "0.1.0"
