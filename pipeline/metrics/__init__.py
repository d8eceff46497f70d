"""Metrics and the frozen networks behind them (LPIPS, Inception), kept apart from training.

Pretrained weights are never downloaded implicitly: they come from params (a path,
https:// or s3:// through the fetch layer) or torch hub's cache; without them a
network runs only when params allow a random stand-in, and its name then ends in
``_randinit`` so no figure can pass for the real metric.
"""

STAND_IN_SUFFIX = "_randinit"


def stand_in_name(metric: str, stand_in: bool) -> str:
    """``metric`` as reported: with ``_randinit`` when its network runs on stand-in weights.
    The one naming rule for every stage's figures (``lpips_alex_randinit``, ``fid_randinit``)."""
    return metric + STAND_IN_SUFFIX if stand_in else metric
