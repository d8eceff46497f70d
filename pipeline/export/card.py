"""Model cards: one JSON (for machines) and one Markdown (for people) per exported model.

A card says what the model is (architecture, channel configuration, resolution,
params and MACs from :mod:`pipeline.cost`), how to call it (input and output
specification), how good it is (the search stage's figures, the evaluate stage's
when ``metrics/evaluate.json`` exists), how faithfully each file reproduces PyTorch
(parity), and what exactly was written: size and sha256 of every file (the cards
themselves excepted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_path, sha256_file, write_json

CARD_JSON, CARD_MD = "card.json", "card.md"

INPUT_DOC = {
    "wplus": "W+: one style per teacher layer, the teacher's layout (entries the student does "
             "not read are ignored)",
    "w": "w: one style for every layer (broadcast)",
    "z": "z ~ N(0, I): the teacher's mapping network and truncation towards w_avg are built in",
}


def file_list(folder: Path) -> list[dict[str, Any]]:
    """Every regular file under ``folder`` but the cards: path (relative), bytes, sha256."""
    return [{"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size,
             "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (CARD_JSON, CARD_MD)]


def artifact_bytes(path: Path) -> int:
    """Size of a file, or of every file in a package folder (.mlpackage)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """``card.json`` and ``card.md`` in ``folder``; the file list is taken here."""
    card = {**card, "files": file_list(folder)}
    write_json(folder / CARD_JSON, card)
    with atomic_path(folder / CARD_MD) as tmp:
        tmp.write_text(markdown(card))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def markdown(card: dict[str, Any]) -> str:
    """The card for people (the same facts as card.json)."""
    arch, cost, out = card["architecture"], card["cost"], card["output"]
    lines = [f"# {card['name']}: StyleGAN2 mobile student", "",
             f"{card['summary']}", "", "## Architecture", ""]
    lines += _table(["", ""], [
        ["family", arch["family"]], ["head", arch["head"]],
        ["demodulation", arch["demodulation"]], ["auxiliary heads", arch["auxiliary_heads"]],
        ["noise", arch["noise"]], ["style dim", arch["style_dim"]],
        ["channels (per layer)", arch["channels"]], ["full network's channels", arch["full_channels"]],
        ["output resolution", card["resolution"]], ["teacher resolution", card["teacher_resolution"]],
    ])
    lines += ["", "## Cost", ""]
    lines += _table(["", "value"], [[k, _num(v)] for k, v in cost.items()])
    lines += ["", "Counted by `pipeline.cost` (synthesis network as exported: folded, last head "
              "only; the mapping network apart)."]
    for section, title in (("search", "Search"), ("evaluate", "Evaluation (evaluate stage)")):
        if card.get(section):
            lines += ["", f"## {title}", ""]
            lines += _table(["", "value"], [[k, _num(v)] for k, v in sorted(card[section].items())
                                            if not isinstance(v, (dict, list))])
    if not card.get("evaluate"):
        lines += ["", "No evaluate-stage figures (metrics/evaluate.json absent)."]
    lines += ["", "## Inputs and output", ""]
    lines += _table(["name", "shape", "dtype", "meaning"], [
        [f"`{i['name']}`", i["shape"], i["dtype"], i["description"]] for i in card["inputs"]])
    lines += ["", f"Output `{out['name']}`: {out['shape']}, {out['layout']}, range "
              f"{out['range']} ({out['description']}). fp16 files of ONNX and ExecuTorch take "
              "and return float16; Core ML files take and return float32."]
    lines += ["", "## Files and parity", ""]
    parity = card["parity"]
    lines += [f"Parity: {parity['samples']} fixed inputs (seed {parity['seed']}) against the "
              f"PyTorch student; LPIPS: {parity['lpips_network']}. Tolerances: fp32 "
              f"max abs {parity['max_abs_err']}, LPIPS {parity['lpips']}; fp16 max abs "
              f"{parity['fp16_max_abs_err']}, LPIPS {parity['fp16_lpips']}.", ""]
    lines += _table(["file", "format", "input", "precision", "bytes", "max abs err", "LPIPS",
                     "checked by"], [
        [f"`{a['path']}`", a["format"], a["input"], a["precision"], _num(a["bytes"]),
         _num(a.get("max_abs_err", "-")), _num(a.get("lpips", "-")), a["checked_by"]]
        for a in card["artifacts"]])
    int8 = [a for a in card["artifacts"] if a["precision"] == "int8"]
    if int8:
        lines += ["", "## int8", "", "Static post-training quantization of the primary input "
                  "variant, each file against its fp32 file in the same runtime (batch-1 speed-up; "
                  "LPIPS mean / worst, PSNR median / worst). A file over the gate is not published.",
                  ""]
        lines += _table(["file", "LPIPS", "PSNR (dB)", "fp32 ms", "int8 ms", "speed-up", "published"], [
            [f"`{a['path']}`", f"{_num(a['lpips_to_fp32'])} / {_num(a['lpips_max_to_fp32'])}",
             f"{a['psnr_to_fp32']:.1f} / {a['psnr_min_to_fp32']:.1f}", f"{a['fp32_ms']:.3g}",
             f"{a['int8_ms']:.3g}", f"{a['speedup']:.2f}x", "yes" if a["published"] else
             "**no**: over the gate"] for a in int8])
    for fmt, why in sorted(card.get("formats_skipped", {}).items()):
        lines.append(f"\nNot produced: **{fmt}**: {why}")
    lines += ["", "## Every file", ""]
    lines += _table(["path", "bytes", "sha256"],
                    [[f"`{f['path']}`", _num(f["bytes"]), f"`{f['sha256']}`"] for f in card["files"]])
    lines += ["", "## Source", "", "```json", json.dumps(card["source"], indent=2), "```", ""]
    return "\n".join(lines)
