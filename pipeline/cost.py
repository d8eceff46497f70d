"""Exact, analytic parameter and MAC counts of the teacher and student generators.

Closed-form sums over the layers our modules build, at batch 1, so costs of any
channel configuration are known without building or tracing a network (the
channel search evaluates thousands). Tests check every figure against the real
modules (``tests/test_cost.py``).

Channel lists (``channels``):

* teacher (Anycost GAN's convention, models/dynamic_channel.py): the constant
  input's channels, then the output channels of every 3x3 modulated conv in order
  (conv1 at 4x4, then two per resolution 8..R): length 2 log2(R) - 2 (18 at 1024).
* student: the constant input's channels, conv1's output (4x4), then per level
  (feature resolution 8..R/2) the outputs of its conv1 and conv2: length
  2 log2(R) - 4 (16 at 1024). A level's IDWT up-sampling reads its input as 4 Haar
  subbands, so the channels entering each level must be a multiple of 4.

With ``output_resolution`` below R the network stops there: the teacher at the
ToRGB of that resolution, the student at the level whose head gives that image
size (features at R_OUT/2). The list may then have the length for R (later entries
are ignored) or exactly the length for R_OUT. Without a list: config-f channels
for the multiplier (the student: MobileStyleGAN's, the teacher's channels at each
feature resolution, rounded up to a multiple of 4).

What is counted:

* ``params``: parameters of the synthesis network that runs up to the output
  resolution (teacher: constant, convs, ToRGBs, noise strengths, biases; student:
  the inference network, fused demodulation folded and only the last head, as
  :func:`pipeline.models.mobile.fold_demodulation` leaves it). ``params_mapping``
  apart. The student's ``head`` (wavelet or UpToRGB) and ``input_layer`` (its 4x4
  conv, dense or DW-separable) are keywords of :func:`count`: pass its config's.
* ``macs`` (physical multiply-accumulates of the synthesis network as executed):
  dense, depthwise and 1x1 convs (out x in/groups x k^2 per output pixel);
  the stride-2 transposed conv only over its real products (in x out x k^2 per
  INPUT pixel); affine (style) linears, style_dim x in; FIR blur/up-sampling as
  upfirdn2d runs it (a depthwise 4x4 conv over the padded zero-inserted image, 16
  per output pixel and channel); teacher modulation w' = s w (out in k^2, ToRGB
  included) and demodulation's sum of squares (out in k^2); student activation
  modulation x s (one multiply per element of the modulated input, in DW and dense
  convs, IDWT up-sampling and the head); UpToRGB's bilinear x2, 4 per output pixel
  and channel (a 2x2 weighted sum, as torchprofile counts it too). Not counted
  (they are adds or fold into neighbouring weights): bias and skip adds, noise
  injection, leaky ReLU and its sqrt(2) gain, the constant equalized-lr scales,
  applying 1/sigma, the Haar IDWT's sums and 1/2. ``macs_mapping``: the mapping network's linears (n_mlp D^2).
* ``macs_anycost``: what ``torchprofile.profile_macs`` reports for the whole
  generator from z at batch 1 (mapping included), Anycost GAN's convention: its
  rules applied to the aten ops our modules trace to. Every ``aten::mul`` counts
  its output's elements (equalized-lr weight scales, modulation, demodulation,
  noise, activation gain, IDWT halves), ``aten::leaky_relu`` and ``aten::mean``
  their outputs, ``aten::upsample_bilinear2d`` 4 per output element, linears in x
  out, and every convolution out_pixels x in/groups x k^2 over its OUTPUT, so the
  transposed conv counts its whole (2H+1)^2 output; even the 0-d shape products
  (batch x channels) that the trace records count 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .errors import PipelineError
from .models.stylegan2 import config_f_channels, resolutions

KIND = ("teacher", "student")
HEADS = ("wavelet", "uptorgb")  # StudentConfig.head
INPUT_LAYERS = ("dense", "separable")  # StudentConfig.input_layer
RGB, WAVELET, FIR_TAPS, BILINEAR_TAPS = 3, 12, 16, 4
# torch.jit.trace records shape arithmetic on traced sizes as aten::mul of 0-d
# tensors, which torchprofile counts as 1 MAC each: two per reshape site below.
SHAPE_MULS = 2


class CostError(PipelineError):
    """An impossible architecture for the cost function."""


def default_channels(arch: str, resolution: int, channel_multiplier: int = 2) -> list[int]:
    """Config-f channels in the list convention of ``arch``."""
    ch = config_f_channels(resolution, channel_multiplier)
    if arch == "teacher":
        return [ch[4]] + [ch[r] for r in resolutions(resolution) for _ in (0, 1)][1:]
    return [-(-ch[r] // 4) * 4 for r in resolutions(resolution // 2) for _ in (0, 1)]


def _check(arch: str, resolution: int, channels: list[int] | None, channel_multiplier: int,
           output_resolution: int | None) -> tuple[list[int], int]:
    if arch not in KIND:
        raise CostError(f"arch must be teacher or student, got {arch!r}")
    r = resolution
    if r < 8 or r > 4096 or r & (r - 1):
        raise CostError(f"resolution must be a power of two in [8, 4096], got {r}")
    out = r if output_resolution is None else output_resolution
    if out < 8 or out > r or out & (out - 1):
        raise CostError(f"output resolution must be a power of two in [8, {r}], got {out}")
    if channels is None:
        if channel_multiplier < 1:
            raise CostError(f"channel multiplier must be >= 1, got {channel_multiplier}")
        channels = default_channels(arch, r, channel_multiplier)
    lengths = {2 * int(math.log2(x)) - (2 if arch == "teacher" else 4) for x in (r, out)}
    if len(channels) not in lengths:
        raise CostError(f"{arch} channels need {' or '.join(map(str, sorted(lengths)))} "
                        f"entries for resolution {r} (output {out}), got {len(channels)}")
    if any(not isinstance(c, int) or isinstance(c, bool) or c <= 0 for c in channels):
        raise CostError(f"channels must be positive integers, got {channels}")
    n = 2 * int(math.log2(out)) - (2 if arch == "teacher" else 4)
    channels = list(channels[:n])
    if arch == "student":
        bad = [c for c in channels[1:-1:2] if c % 4]
        if bad:
            raise CostError(f"student channels entering a level (entries 1, 3, 5, ...) must be "
                            f"multiples of 4 (IDWT splits them into 4 subbands), got {bad}")
    return channels, out


class _Tally:
    """Accumulates the three conventions layer by layer."""

    def __init__(self, d: int) -> None:
        self.d, self.params, self.macs, self.any = d, 0, 0, 0

    def affine(self, n: int) -> None:
        """EqualLinear(D -> n) without activation: weight*scale, linear, bias*lr_mul."""
        self.params += self.d * n + n
        self.macs += self.d * n
        self.any += 2 * self.d * n + n

    def act(self, c: int, h: int) -> None:
        """Noise strength * noise, FusedLeakyReLU (leaky_relu + gain mul)."""
        self.params += 1 + c
        self.any += h * h + 2 * c * h * h


def _teacher(ch: list[int], d: int) -> _Tally:
    t = _Tally(d)
    t.params += ch[0] * 16  # constant input

    def modconv(cin: int, cout: int, k: int, h: int, demod: bool, up: bool) -> None:
        t.affine(cin)
        t.params += cout * cin * k * k
        t.macs += cout * cin * k * k * (2 if demod else 1)  # s*w, sum of squares
        t.any += cout * cin * k * k * (3 if demod else 2)  # scale*w, *s, *1/sigma
        t.any += SHAPE_MULS  # batch * in_ch, batch * out_ch (reshapes)
        if up:
            t.macs += cin * cout * k * k * h * h + cout * FIR_TAPS * (2 * h) ** 2
            t.any += cout * cin * k * k * (2 * h + 1) ** 2 + cout * FIR_TAPS * (2 * h) ** 2
        else:
            t.macs += cout * cin * k * k * h * h
            t.any += cout * cin * k * k * h * h

    def to_rgb(cin: int, h: int, skip: bool) -> None:
        modconv(cin, RGB, 1, h, demod=False, up=False)
        t.params += RGB
        if skip:  # FIR x2 up-sampling of the previous RGB
            t.macs += RGB * FIR_TAPS * h * h
            t.any += RGB * FIR_TAPS * h * h + SHAPE_MULS  # h * up, w * up

    modconv(ch[0], ch[1], 3, 4, True, False)
    t.act(ch[1], 4)
    to_rgb(ch[1], 4, skip=False)
    cin = ch[1]
    for b in range(len(ch) // 2 - 1):
        h = 8 << b
        a, c = ch[2 + 2 * b], ch[3 + 2 * b]
        modconv(cin, a, 3, h // 2, True, True)
        t.act(a, h)
        modconv(a, c, 3, h, True, False)
        t.act(c, h)
        to_rgb(c, h, skip=True)
        cin = c
    return t


def _student(ch: list[int], d: int, head: str, input_layer: str, skip: bool = False) -> _Tally:
    t = _Tally(d)
    t.params += ch[0] * 16
    out = WAVELET if head == "wavelet" else RGB

    def head_(cin: int, h: int) -> None:
        """A head at feature size h: x*s, 1x1 conv, then to RGB at 2h."""
        t.affine(cin)
        t.params += out * cin + out
        t.macs += cin * h * h + out * cin * h * h
        t.any += cin + cin * h * h + out * cin * h * h
        if head == "wavelet":  # IDWT to RGB: adds, and 1/2 (no MACs; muls for torchprofile)
            t.any += WAVELET * h * h + SHAPE_MULS
        else:  # UpToRGB: bilinear x2, a 2x2-tap weighted sum per output pixel
            t.macs += BILINEAR_TAPS * RGB * (2 * h) ** 2
            t.any += BILINEAR_TAPS * RGB * (2 * h) ** 2

    def skip_(h: int) -> None:
        """Bilinear x2 of the RGB image of size h (to 2h; adding the head to it: no MACs)."""
        t.macs += BILINEAR_TAPS * RGB * (2 * h) ** 2
        t.any += BILINEAR_TAPS * RGB * (2 * h) ** 2

    def dwconv(cin: int, cout: int, h: int) -> None:
        """Folded modulated DW-separable conv + noise + activation."""
        t.affine(cin)
        t.params += cin * 9 + cout * cin
        t.macs += cin * h * h + cin * 9 * h * h + cout * cin * h * h
        t.any += cin + cin * h * h + cin * 9 * h * h + cout * cin * h * h  # scale*s, x*s, dw, pw
        t.act(cout, h)

    def dense(cin: int, cout: int, h: int) -> None:
        """Folded modulated dense 3x3 conv (modulates x, not w) + noise + activation."""
        t.affine(cin)
        t.params += cout * cin * 9
        t.macs += cin * h * h + cout * cin * 9 * h * h
        t.any += cin + cin * h * h + cout * cin * 9 * h * h  # scale*s, x*s, conv
        t.act(cout, h)

    (dense if input_layer == "dense" else dwconv)(ch[0], ch[1], 4)
    cin, h = ch[1], 4
    for b in range(len(ch) // 2 - 1):
        if skip:  # this level's head, its image (at 2h) up-sampled for the next one
            head_(cin, h)
            skip_(2 * h)
        t.affine(cin)  # IDWT up-sampling: x*s, then Haar (4 muls by 1/2 per output quad)
        t.macs += cin * h * h
        t.any += 2 * cin * h * h + SHAPE_MULS  # 2 * h, 2 * w in idwt's reshape
        h *= 2
        dwconv(cin // 4, ch[2 + 2 * b], h)
        dwconv(ch[2 + 2 * b], ch[3 + 2 * b], h)
        cin = ch[3 + 2 * b]
    head_(cin, h)  # the last head
    return t


def mapping_cost(style_dim: int = 512, n_mlp: int = 8) -> dict[str, int]:
    """PixelNorm + n_mlp EqualLinear(D, D) with fused leaky ReLU."""
    d = style_dim
    return {"params": n_mlp * (d * d + d), "macs": n_mlp * d * d,
            "macs_anycost": 1 + d + n_mlp * (2 * d * d + 3 * d)}


def count(arch: str, resolution: int, channels: list[int] | None = None,
          channel_multiplier: int = 2, output_resolution: int | None = None,
          style_dim: int = 512, n_mlp: int = 8, *, head: str = "wavelet",
          input_layer: str = "dense", skip: bool = False) -> dict[str, int]:
    """Params and MACs of ``arch`` (see the module docstring for what each counts);
    ``head``, ``input_layer`` and ``skip``: the student's (its config's), ignored for the
    teacher."""
    if style_dim < 1 or n_mlp < 1:
        raise CostError(f"style_dim and n_mlp must be >= 1, got {style_dim}, {n_mlp}")
    if head not in HEADS or input_layer not in INPUT_LAYERS:
        raise CostError(f"head must be one of {HEADS} and input_layer one of {INPUT_LAYERS}, "
                        f"got {head!r}, {input_layer!r}")
    ch, out = _check(arch, resolution, channels, channel_multiplier, output_resolution)
    t = (_teacher(ch, style_dim) if arch == "teacher"
         else _student(ch, style_dim, head, input_layer, skip))
    m = mapping_cost(style_dim, n_mlp)
    return {"params": t.params, "params_mapping": m["params"], "macs": t.macs,
            "macs_mapping": m["macs"], "macs_anycost": t.any + m["macs_anycost"],
            "output_resolution": out, "channels": ch}


def count_student(cfg, widths: list[int] | None = None, output_resolution: int | None = None,
                  n_mlp: int = 8) -> dict[str, int]:
    """:func:`count` of a ``StudentConfig`` (its head, skips and 4x4 layer), at ``widths``
    (default: the channels it runs) and ``output_resolution``."""
    return count("student", cfg.resolution, list(widths or cfg.layer_widths),
                 output_resolution=output_resolution, style_dim=cfg.style_dim, n_mlp=n_mlp,
                 head=cfg.head, input_layer=cfg.input_layer, skip=cfg.skip)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=KIND, required=True)
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--channel-multiplier", type=int, default=2)
    parser.add_argument("--channels", help="JSON list of ints (see the channel convention)")
    parser.add_argument("--output-resolution", type=int)
    parser.add_argument("--style-dim", type=int, default=512)
    parser.add_argument("--n-mlp", type=int, default=8)
    parser.add_argument("--head", choices=HEADS, default="wavelet", help="student only")
    parser.add_argument("--input-layer", choices=INPUT_LAYERS, default="dense", help="student only")
    parser.add_argument("--skip", action="store_true", help="student only: output skips (every head draws)")
    args = parser.parse_args(argv)
    try:
        channels = None
        if args.channels is not None:
            try:
                channels = json.loads(args.channels)
            except json.JSONDecodeError as e:
                raise CostError(f"--channels is not valid JSON ({e.msg}): {args.channels!r}") from None
            if not isinstance(channels, list):
                raise CostError(f"--channels must be a JSON list of ints, got {args.channels!r}")
        result = count(args.arch, args.resolution, channels, args.channel_multiplier,
                       args.output_resolution, args.style_dim, args.n_mlp,
                       head=args.head, input_layer=args.input_layer, skip=args.skip)
    except CostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
