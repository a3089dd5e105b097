"""LiteDiff Lab core library: models, data, samplers, metrics and training for small DDPMs.

Never imports streamlit; long operations report through a ``progress(done, total, message)``
callback (see :mod:`litediff_core.progress`).
"""

__version__ = "0.1.0"
