"""Metrics and the frozen networks behind them (LPIPS, Inception), kept apart from training.

Pretrained weights are never downloaded implicitly: they come from params (a path,
https:// or s3:// through the fetch layer) or torch hub's cache; without them a
network runs only when params allow a random stand-in, and its name then ends in
``_randinit`` so no figure can pass for the real metric.
"""
