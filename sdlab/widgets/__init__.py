"""Thin ipywidgets panels over the core; no logic lives here.

Every panel is a :class:`~sdlab.widgets.base.Panel`: display it in a notebook,
or drive it from plain Python (tests) through its widgets and ``run(..., background=False)``.
"""
