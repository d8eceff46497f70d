"""stylegan-mobile: distil StyleGAN2 teachers into small, fast students for phones.

The library behind the pipeline stages (fetch_teacher -> distill -> search ->
evaluate -> export). Components in ``components/`` are thin CLIs over it.
"""

__version__ = "0.1.0"
