"""search: Anycost GAN's evolutionary search of sub-network configurations
(per-layer widths and output resolution) of the distilled student under MAC or latency
budgets.

    budgets (params) -> MACs or ms in a runtime, checked against the smallest network
    (latency: predicted by pipeline.bench.latency's model, measured here and cached, or
     a table measured on the target device)
    per budget: uniform-ratio baseline (the widest uniform sub-network that fits)
                -> evolution seeded with it (elitist, so never worse), only candidates
                   within budget are ever created -> best configuration
    latency budgets: the best and uniform configurations exported and measured; the
                MAC-budget search at the uniform configuration's MACs, for comparison
    -> artifacts/search/configs.json, pareto*.png, latency.csv (latency budgets: every
       configuration predicted, and measured where it was), metrics/search.json,
       plots/search/*.csv

Fitness of a candidate: LPIPS (``search.lpips`` backbone, named ``lpips_<net>``) or
MSE between the sub-network's images and the reference's (the full student: Anycost's
consistency; or the teacher) on fixed latents and noise, through the same path as
distill's validation and evaluate (pipeline.metrics.fixed_latents: a lower-resolution
output is up-sampled to full size). Distances to both references are recorded. MACs are pipeline.cost's physical count
of the folded inference network.

The comparison of a latency budget (``macs_search_*``): a MAC-budget search whose budget
is the MACs of the latency budget's uniform baseline (what uniform channel reduction, the
MAC-minded choice, needs to reach that latency): its best configuration's fitness and
predicted latency beside the latency search's.
"""

from __future__ import annotations

import csv
import logging
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import usage
from ..bench import latency as lat
from ..bench.measurements import default_dir, describe
from ..checkpoints import load_teacher
from ..checkpoints.project import load_student
from ..cost import count_student
from ..errors import ParamsError, PipelineError
from ..io import atomic_dir, atomic_path, sha256_file, write_json
from ..metrics.fixed_latents import FixedLatents, mean_distances
from ..metrics.networks import lpips_network
from ..metrics.perceptual import LPIPS
from ..models.elastic import output_resolutions, quantize, subnet, uniform_widths
from ..models.mobile import MobileSynthesis, StudentConfig
from ..params import Evolution, LatencyBudget, Params, Search, SearchLatency, parse_budget
from . import Context, StageResult, option, stand_ins

log = logging.getLogger(__name__)
NAME = "search"
SHARED = ("metric_networks",)
CONFIGS_FILE = "configs.json"
LATENCY_CSV = "latency.csv"
UNIFORM_STEPS = 64  # the uniform baseline tries ratios k/64


@dataclass(frozen=True)
class Budget:
    """A resolved budget: MACs, or predicted ms in ``latency.model``'s latency model."""

    name: str
    limit: float  # MACs or ms
    latency: LatencyBudget | None = None

    @property
    def text(self) -> str:
        return (f"{self.limit:g} ms on {self.latency.model}" if self.latency
                else f"{int(self.limit):,} MACs")


@dataclass(frozen=True)
class Candidate:
    """A sub-network: per-layer widths (full length, student convention) and output size."""

    widths: tuple[int, ...]
    resolution: int


@dataclass
class Scored:
    candidate: Candidate
    macs: int
    params: int
    distances: dict[str, float]  # lpips_<net>, mse, pixel_l1 (to the full student), *_teacher

    def row(self) -> dict[str, Any]:
        return {"channels": list(self.candidate.widths), "resolution": self.candidate.resolution,
                "macs": self.macs, "params": self.params, **self.distances}


class Space:
    """The choices per gene: each layer's widths at ``ratios``, the output resolutions."""

    def __init__(self, cfg: StudentConfig, ratios: list[float], min_resolution: int | None) -> None:
        self.cfg, self.ratios = cfg, sorted(ratios)
        self.choices = [sorted({quantize(f * r, f) for r in ratios}) for f in cfg.full_widths]
        self.resolutions = (output_resolutions(cfg, min_resolution) if min_resolution
                            else [cfg.resolution])
        if min_resolution and min_resolution > cfg.resolution:
            raise ParamsError(f"search.min_resolution ({min_resolution}) is above the "
                              f"student's {cfg.resolution}x{cfg.resolution} output")
        self.latency: dict[str, lat.LatencyModel] = {}  # by LatencyBudget.model

    def latency_ms(self, c: Candidate, model: str) -> float:
        return self.latency[model].predict(c.widths, c.resolution)

    def spend(self, c: Candidate, budget: Budget) -> float:
        """What ``c`` costs in the budget's terms: MACs or predicted ms."""
        return self.latency_ms(c, budget.latency.model) if budget.latency else self.cost(c)[0]

    def within(self, c: Candidate, budget: Budget) -> bool:
        return self.spend(c, budget) <= budget.limit

    def cost(self, c: Candidate) -> tuple[int, int]:
        """(MACs, params) of the folded inference sub-network."""
        n = count_student(self.cfg, list(c.widths), c.resolution)
        return n["macs"], n["params"]

    @property
    def full(self) -> Candidate:
        return Candidate(tuple(self.cfg.full_widths), self.cfg.resolution)

    @property
    def smallest(self) -> Candidate:
        return Candidate(tuple(c[0] for c in self.choices), self.resolutions[0])

    def random(self, rng: random.Random) -> Candidate:
        return Candidate(tuple(rng.choice(c) for c in self.choices), rng.choice(self.resolutions))

    def mutate(self, c: Candidate, prob: float, rng: random.Random) -> Candidate:
        widths = tuple(rng.choice(ch) if rng.random() < prob else w
                       for w, ch in zip(c.widths, self.choices, strict=True))
        res = rng.choice(self.resolutions) if rng.random() < prob else c.resolution
        return Candidate(widths, res)

    @staticmethod
    def crossover(a: Candidate, b: Candidate, rng: random.Random) -> Candidate:
        widths = tuple(rng.choice(pair) for pair in zip(a.widths, b.widths, strict=True))
        return Candidate(widths, rng.choice((a.resolution, b.resolution)))

    def uniform(self, ratio: float, resolution: int) -> Candidate:
        widths = uniform_widths(self.cfg, ratio)
        return Candidate(tuple(widths), resolution)


@dataclass
class Paths:
    student: str = option("artifacts/student/student.safetensors", "the distilled student")
    teacher: str = option("artifacts/teacher/teacher.safetensors", "the fetched teacher")
    out: str = option("artifacts/search", "output folder", output=True)
    plots: str = option("plots/search", "Pareto CSV folder", output=True)


def key_of(cfg: Search, lpips: LPIPS) -> str:
    """The fitness: a distance name of Evaluator (``lpips_alex``, ``mse_teacher``, ...)."""
    metric = {"lpips": lpips.name, "mse": "mse", "ssim": "dssim"}[cfg.fitness]
    return metric if cfg.reference == "student" else f"{metric}_teacher"


class Evaluator:
    """Distances of sub-networks to the full student and the teacher on fixed latents and
    noise (the same for every candidate), cached per candidate."""

    def __init__(self, student: MobileSynthesis, teacher, lpips: LPIPS, cfg: Search,
                 device: torch.device) -> None:
        self.student, self.lpips = student.to(device).eval(), lpips
        self.latents = FixedLatents(teacher, cfg.num_samples, cfg.batch_size,
                                    cfg.truncation_psi, cfg.seed, device)
        # The full student's images are held with the latents, or recomputed per candidate.
        self.full = ([image for _, image in self.latents.outputs(self.student)]
                     if self.latents.keep else self.student)
        self.cache: dict[Candidate, dict[str, float]] = {}

    def __call__(self, c: Candidate) -> dict[str, float]:
        if c not in self.cache:
            sub = subnet(self.student, list(c.widths), c.resolution)
            d = mean_distances(sub, self.latents, self.lpips, {"": self.full, "_teacher": None})
            # 1 - SSIM: a distance like the others (the search minimises)
            self.cache[c] = {**d, "dssim": 1 - d["ssim"], "dssim_teacher": 1 - d["ssim_teacher"]}
        return self.cache[c]


@dataclass
class Measured:
    """A latency budget's configurations exported and timed in its runtime (batch 1)."""

    best_ms: float
    uniform_ms: float


@dataclass
class BudgetResult:
    name: str
    budget: Budget
    best: Scored
    uniform: Scored
    uniform_ratio: float
    trivial: bool  # the budget admits the full network: no search was needed
    history: list[float] = field(default_factory=list)  # best fitness per generation
    evaluated: list[Scored] = field(default_factory=list)
    measured: Measured | None = None  # latency budgets
    macs_search: BudgetResult | None = None  # latency budgets: the MAC search compared

    @property
    def budget_macs(self) -> int | None:
        return None if self.budget.latency else int(self.budget.limit)


def resolve_budgets(budgets: dict[str, Any], space: Space) -> dict[str, Budget]:
    """Budget name -> Budget; one below the smallest sub-network is an error (before
    searching). Latency budgets need their models in ``space.latency``."""
    full_macs, _ = space.cost(space.full)
    min_macs, _ = space.cost(space.smallest)
    r = space.resolutions[0]
    out = {}
    for name, value in budgets.items():
        spec = parse_budget(value)
        if isinstance(spec, LatencyBudget):
            least = space.latency_ms(space.smallest, spec.model)
            if spec.ms < least:
                full_ms = space.latency_ms(space.full, spec.model)
                raise ParamsError(
                    f"search.budgets.{name}: {value!r} is below the smallest sub-network's "
                    f"predicted latency in {spec.model} ({least:.3f} ms: every layer at its "
                    f"smallest ratio, {r}x{r} output); the full student's is {full_ms:.3f} ms")
            out[name] = Budget(name, spec.ms, spec)
            continue
        macs = int(spec * full_macs) if isinstance(spec, float) else spec
        if macs < min_macs:
            raise ParamsError(
                f"search.budgets.{name}: {value!r} = {macs:,} MACs is below the smallest "
                f"sub-network of this student ({min_macs:,} MACs: every layer at its smallest "
                f"ratio, {r}x{r} output); the full student has {full_macs:,}")
        out[name] = Budget(name, macs)
    return out


def latency_models(space: Space, cfg: SearchLatency, budgets: dict[str, Any],
                   cache_dir: Path | None) -> dict[str, lat.LatencyModel]:
    """The latency model of every runtime a budget names: a table given in
    ``search.latency.tables`` (checked against this student), or measured here (cached).
    Runtimes (or int8 quantizers) not installed here fail first."""
    specs = {name: s for name, v in budgets.items() if isinstance(s := parse_budget(v), LatencyBudget)}
    for name, spec in specs.items():
        why = lat.check_installed(spec.runtime, spec.precision)
        if why:
            raise ParamsError(f"search.budgets.{name}: {spec.model} cannot run here ({why})")
    unused = sorted(set(cfg.tables) - {s.model for s in specs.values()})
    if unused:
        raise ParamsError(f"search.latency.tables: no latency budget names {', '.join(unused)}")
    resolutions = list(space.resolutions)
    models = {}
    for model in dict.fromkeys(s.model for s in specs.values()):
        spec = next(s for s in specs.values() if s.model == model)
        if model in cfg.tables:
            where = f"search.latency.tables.{model}"
            table = lat.load_table(cfg.tables[model], where)
            lat.check_table(table, space.cfg, space.choices, resolutions, spec.runtime,
                            spec.precision, where)
            models[model] = table
            continue

        def build(spec: LatencyBudget = spec) -> lat.LatencyModel:
            return lat.build_model(space.cfg, space.choices, resolutions, spec.runtime,
                                   cfg.threads, cfg.grid, cfg.holdout, cfg.repeats, cfg.seed,
                                   spec.precision)

        if cache_dir is None:
            models[model] = build()
            continue
        key = lat.cache_key(space.cfg, space.choices, resolutions, spec.runtime, spec.precision,
                            cfg.threads, cfg.grid, cfg.holdout, cfg.repeats, cfg.seed)
        models[model], made = lat.cached_model(cache_dir, key, build)
        models[model].measured = made
        log.info("latency model %s: %s", model, describe(made))
    return models


def uniform_baseline(space: Space, budget: Budget) -> tuple[Candidate, float]:
    """The widest uniform-ratio sub-network within budget, at the highest output resolution
    where one fits (Anycost's uniform channel reduction). A MAC budget tries ratios k/64; a
    latency budget only the search's own ratios: widths between them are interpolated by
    the latency model, and a runtime's kernels can be far slower at widths off its
    preferred multiples (the default run's 56 channels: predicted 0.49 ms, measured 0.94)."""
    ratios = (list(reversed(space.ratios)) if budget.latency
              else [k / UNIFORM_STEPS for k in range(UNIFORM_STEPS, 0, -1)])
    for res in reversed(space.resolutions):
        for ratio in ratios:
            c = space.uniform(ratio, res)
            if space.within(c, budget):
                return c, ratio
    # MACs: unreachable after resolve_budgets (ratio 1/64 is narrower than the smallest
    # candidate); latency: the smallest candidate may be predicted within it, no uniform one.
    return space.smallest, 0.0


def evolve(space: Space, score: Callable[[Candidate], Scored], key: str, budget: Budget,
           seeds: list[Candidate], evo: Evolution, rng: random.Random,
           on_generation: Callable[[int, Scored], None] | None = None) -> list[Scored]:
    """Elitist evolution among candidates within ``budget``; returns the final population,
    best first. ``seeds`` join the first population, so the result is never worse."""

    def feasible(make: Callable[[], Candidate], fallback: Candidate) -> Candidate:
        for _ in range(100):  # rejection sampling: over-budget children are never created
            c = make()
            if space.within(c, budget):
                return c
        return fallback

    population = list(dict.fromkeys(seeds))
    while len(population) < evo.population:
        population.append(feasible(lambda: space.random(rng), space.smallest))
    n_parents = max(1, round(evo.parent_fraction * evo.population))
    n_mutants = round(evo.mutation_ratio * (evo.population - n_parents))
    ranked: list[Scored] = []
    for gen in range(evo.generations):
        ranked = sorted({c: score(c) for c in population}.values(), key=lambda s: s.distances[key])
        if on_generation:
            on_generation(gen, ranked[0])
        if gen == evo.generations - 1:
            break
        parents = [s.candidate for s in ranked[:n_parents]]
        children = []
        for i in range(evo.population - len(parents)):
            p = rng.choice(parents)
            if i < n_mutants:
                children.append(feasible(lambda p=p: space.mutate(p, evo.mutation_prob, rng), p))
            else:
                q = rng.choice(parents)
                children.append(feasible(lambda p=p, q=q: space.crossover(p, q, rng), p))
        population = parents + children
    return ranked


def search_budget(name: str, budget: Budget, space: Space, evaluator: Evaluator, cfg: Search,
                  progress: bool = True,
                  on_generation: Callable[[int, Scored], None] | None = None) -> BudgetResult:
    key = key_of(cfg, evaluator.lpips)
    scored: dict[Candidate, Scored] = {}

    def score(c: Candidate) -> Scored:
        if c not in scored:
            macs, params = space.cost(c)
            scored[c] = Scored(c, macs, params, evaluator(c))
        return scored[c]

    if space.within(space.full, budget):  # trivially satisfied: the full network fits
        full = score(space.full)
        return BudgetResult(name, budget, full, full, 1.0, True, [full.distances[key]], [full])
    uniform, ratio = uniform_baseline(space, budget)
    rng = random.Random(f"{cfg.evolution.seed}/{name}")
    history: list[float] = []
    bar = usage.Progress(f"search {name}", cfg.evolution.generations, "generation", progress)

    def generation(gen: int, best: Scored) -> None:
        history.append(best.distances[key])
        cost = (f"{space.spend(best.candidate, budget):.3f} ms" if budget.latency
                else f"{best.macs / 1e9:.3f} GMAC")
        bar.update(1, **{key: f"{best.distances[key]:.4f}", "cost": cost})
        if on_generation:
            on_generation(gen, best)

    ranked = evolve(space, score, key, budget, [uniform], cfg.evolution, rng, generation)
    bar.close()
    return BudgetResult(name, budget, ranked[0], score(uniform), ratio, False, history,
                        list(scored.values()))


def search_all(student: MobileSynthesis, teacher, lpips: LPIPS, cfg: Search,
               device: torch.device, progress: bool = True,
               on_generation: Callable[[str, int, Scored], None] | None = None,
               cache_dir: Path | None = None) -> tuple[Space, Scored, list[BudgetResult]]:
    """Every budget of ``cfg``; budgets (and latency models) are checked before any search
    starts. Latency models are kept in the measurement store ``cache_dir``
    (pipeline.bench.measurements; None: measured afresh)."""
    space = Space(student.cfg, cfg.ratios, cfg.min_resolution)
    space.latency = latency_models(space, cfg.latency, cfg.budgets, cache_dir)
    budgets = resolve_budgets(cfg.budgets, space)
    evaluator = Evaluator(student, teacher, lpips, cfg, device)
    full_macs, full_params = space.cost(space.full)
    seconds = usage.seconds_per_call(lambda: evaluator(space.full), device)
    full = Scored(space.full, full_macs, full_params, evaluator(space.full))  # cached now
    evo, r = cfg.evolution, student.cfg.resolution
    most = len(budgets) * evo.population * evo.generations
    usage.announce("search", f"{len(budgets)} budget(s) x at most {evo.population} x "
                   f"{evo.generations} candidates, {cfg.num_samples} samples each at {r}x{r} "
                   f"on {torch.device(device).type}", most * seconds,
                   f"at most: the full student's scoring took {usage.duration(seconds)}")
    results = [search_budget(name, budget, space, evaluator, cfg, progress,
                             (lambda g, s, name=name: on_generation(name, g, s))
                             if on_generation else None)
               for name, budget in budgets.items()]
    for r in results:
        if r.budget.latency:
            r.macs_search = search_budget(f"{r.name}~macs", Budget(r.name, r.uniform.macs), space,
                                          evaluator, cfg, progress)
            r.measured = measure_latency(student, teacher, r, cfg.latency)
    return space, full, results


def measure_latency(student: MobileSynthesis, teacher, r: BudgetResult,
                    cfg: SearchLatency) -> Measured:
    """The best and uniform configurations exported (pipeline.export.graph) and timed in the
    budget's runtime, batch 1, ``cfg.threads`` threads."""
    spec, start = r.budget.latency, time.perf_counter()
    configs = [(c.widths, c.resolution) for c in (r.best.candidate, r.uniform.candidate)]
    with tempfile.TemporaryDirectory(prefix="search-latency-") as tmp:
        best, uniform = lat.measure_configs(student, teacher, configs, spec.model, cfg.threads,
                                            cfg.repeats, Path(tmp), cfg.seconds)
    log.info("budget %s: exported and measured in %s (%.0f s)", r.name, spec.model,
             time.perf_counter() - start)
    return Measured(best, uniform)


# -- outputs -------------------------------------------------------------------------
def budget_metrics(r: BudgetResult, key: str, space: Space) -> dict[str, Any]:
    """metrics/search.json's entry for one budget: the searched configuration's cost and
    distances, the uniform baseline's under ``uniform_``, and the fitness gain; a latency
    budget's predicted and measured ms, and the MAC search's fitness beside it."""
    b, u = r.best, r.uniform
    gain = u.distances[key] - b.distances[key]
    spec = r.budget.latency
    if spec and r.measured and r.macs_search:
        m = r.macs_search.best
        cost: dict[str, Any] = {
            "budget_ms": spec.ms, "runtime": spec.runtime, "precision": spec.precision,
            "latency_ms_predicted": space.latency_ms(b.candidate, spec.model),
            "latency_ms_measured": r.measured.best_ms,
            "within_budget": int(r.measured.best_ms <= spec.ms),
            "fitness": b.distances[key],
            "uniform_latency_ms_predicted": space.latency_ms(u.candidate, spec.model),
            "uniform_latency_ms_measured": r.measured.uniform_ms,
            "macs_search_budget_macs": u.macs, "macs_search_macs": m.macs,
            "macs_search_fitness": m.distances[key],
            "macs_search_latency_ms_predicted": space.latency_ms(m.candidate, spec.model)}
    else:
        cost = {"budget_macs": r.budget_macs}
    return {
        **cost, "macs": b.macs, "params": b.params,
        "resolution": b.candidate.resolution, **b.distances,
        "uniform_macs": u.macs, **{f"uniform_{k}": v for k, v in u.distances.items()},
        "fitness_gain": gain,
        "fitness_gain_relative": gain / u.distances[key] if u.distances[key] else 0.0,
        "trivial": int(r.trivial),
    }


def write_outputs(space: Space, full: Scored, results: list[BudgetResult], cfg: Search,
                  lpips: LPIPS, out_dir: Path, plots_dir: Path,
                  student_sha256: str) -> dict[str, Any]:
    key = key_of(cfg, lpips)
    configs = {
        "resolution": space.cfg.resolution,
        "student_sha256": student_sha256,
        "fitness": {"metric": cfg.fitness, "reference": cfg.reference, "key": key,
                    "lpips_network": lpips.name},
        "full": full.row(),
        "latency_models": {name: m.measured for name, m in space.latency.items()},
        "budgets": {r.name: {**r.best.row(), **budget_entry(r), "trivial": r.trivial,
                             "uniform": {**r.uniform.row(), "ratio": r.uniform_ratio},
                             "best_fitness_per_generation": r.history}
                    for r in results},
    }
    metrics = {"budgets": {r.name: budget_metrics(r, key, space) for r in results},
               "full": {"macs": full.macs, "params": full.params,
                        **{k: v for k, v in full.distances.items() if k.endswith("_teacher")}},
               "stand_in_lpips": int(lpips.stand_in)}
    if space.latency:
        metrics["latency_model"] = {
            name: {"median_abs_err": m.check["median_abs_err"], "max_abs_err": m.check["max_abs_err"],
                   "table_seconds": m.seconds, "cached": int(bool(m.measured.get("cached")))}
            for name, m in space.latency.items()}
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / CONFIGS_FILE, configs)
        plot_pareto(space, full, results, key, tmp / "pareto.png")
        for runtime in sorted({r.budget.latency.model for r in results if r.budget.latency}):
            plot_latency_pareto([r for r in results if r.budget.latency
                                 and r.budget.latency.model == runtime], runtime, key,
                                tmp / f"pareto_latency_{runtime}.png")
        if space.latency:
            write_latency_csv(space, results, key, tmp / LATENCY_CSV)
    write_pareto_csv(results, lpips.name, plots_dir / "pareto.csv")
    return metrics


def budget_entry(r: BudgetResult) -> dict[str, Any]:
    """configs.json's budget fields: its MACs, or its ms, runtime and measured latencies."""
    spec = r.budget.latency
    if not spec:
        return {"budget_macs": r.budget_macs}
    return {"budget_ms": spec.ms, "runtime": spec.runtime, "precision": spec.precision,
            **({"latency_ms_measured": r.measured.best_ms,
                "uniform_latency_ms_measured": r.measured.uniform_ms} if r.measured else {})}


LATENCY_COLUMNS = ["model", "budget", "kind", "resolution", "channels", "macs", "predicted_ms",
                   "measured_ms", "fitness"]


def write_latency_csv(space: Space, results: list[BudgetResult], key: str, path: Path) -> None:
    """Every configuration a latency model predicted, per model (runtime and precision):
    the held-out check's (``holdout``), each latency budget's searched and uniform ones
    (measured) and the MAC search's best (predicted only; ``fitness`` is the search's)."""
    rows = [{"model": name, "budget": "", "kind": "holdout", "resolution": c["resolution"],
             "channels": c["channels"], "macs": space.cost(Candidate(tuple(c["channels"]),
                                                                     c["resolution"]))[0],
             "predicted_ms": c["predicted_ms"], "measured_ms": c["measured_ms"], "fitness": ""}
            for name, m in space.latency.items() for c in m.check["configs"]]
    for r in results:
        spec = r.budget.latency
        if not spec:
            continue
        measured = {"searched": r.measured.best_ms, "uniform": r.measured.uniform_ms} if r.measured else {}
        kinds = [("searched", r.best), ("uniform", r.uniform)]
        kinds += [("macs_search", r.macs_search.best)] if r.macs_search else []
        rows += [{"model": spec.model, "budget": r.name, "kind": kind,
                  "resolution": s.candidate.resolution, "channels": list(s.candidate.widths),
                  "macs": s.macs, "predicted_ms": space.latency_ms(s.candidate, spec.model),
                  "measured_ms": measured.get(kind, ""), "fitness": s.distances[key]}
                 for kind, s in kinds]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LATENCY_COLUMNS)
        writer.writeheader()
        writer.writerows({**row, "channels": " ".join(map(str, row["channels"]))} for row in rows)


def write_pareto_csv(results: list[BudgetResult], lpips_name: str, path: Path) -> None:
    """What `dvc plots` draws: MACs vs LPIPS of every searched and uniform configuration
    (column ``lpips``, whatever backbone: dvc.yaml names the columns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in results:
        for kind, s in (("searched", r.best), ("uniform", r.uniform)):
            rows.append({"budget": r.name, "kind": kind, "gmacs": s.macs / 1e9,
                         "lpips": s.distances[lpips_name], "mse": s.distances["mse"]})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_pareto(space: Space, full: Scored, results: list[BudgetResult], key: str,
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    seen = [s for r in results for s in r.evaluated]
    if seen:
        ax.scatter([s.macs / 1e9 for s in seen], [s.distances[key] for s in seen], s=8,
                   c="0.75", label="evaluated candidates")
    uni = sorted({(r.uniform.macs, r.uniform.distances[key]) for r in results})
    ax.plot([m / 1e9 for m, _ in uni], [d for _, d in uni], "s--", c="tab:blue",
            label="uniform channel ratio (baseline)")
    for r in results:
        ax.plot(r.best.macs / 1e9, r.best.distances[key], "*", ms=13, c="tab:red")
        ax.annotate(r.name, (r.best.macs / 1e9, r.best.distances[key]),
                    textcoords="offset points", xytext=(5, 5))
        if r.budget_macs is not None:
            ax.axvline(r.budget_macs / 1e9, c="tab:red", lw=0.6, ls=":")
    ax.plot([], [], "*", c="tab:red", ms=13, label="searched (budget: dotted)")
    ax.plot(full.macs / 1e9, full.distances[key], "o", c="k", label="full student")
    ax.set_xlabel("GMACs (physical, pipeline.cost)")
    ax.set_ylabel(f"{key} (lower is better)")
    ax.set_title("Student sub-networks: cost vs distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency_pareto(results: list[BudgetResult], runtime: str, key: str, path: Path) -> None:
    """Measured latency in ``runtime`` vs distance: searched and uniform configurations of
    its latency budgets (budgets dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in results:
        if not r.measured:
            continue
        ax.plot(r.measured.uniform_ms, r.uniform.distances[key], "s", c="tab:blue")
        ax.plot(r.measured.best_ms, r.best.distances[key], "*", ms=13, c="tab:red")
        ax.plot([r.measured.uniform_ms, r.measured.best_ms],
                [r.uniform.distances[key], r.best.distances[key]], c="0.6", lw=0.6)
        ax.annotate(r.name, (r.measured.best_ms, r.best.distances[key]),
                    textcoords="offset points", xytext=(5, 5))
        ax.axvline(r.budget.limit, c="tab:red", lw=0.6, ls=":")
    ax.plot([], [], "s", c="tab:blue", label="uniform channel ratio (baseline)")
    ax.plot([], [], "*", c="tab:red", ms=13, label="searched (budget: dotted)")
    ax.set_xlabel(f"measured latency, ms ({runtime}, batch 1)")
    ax.set_ylabel(f"{key} (lower is better)")
    ax.set_title(f"Latency budgets in {runtime}: measured latency vs distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(params: Params, paths: Paths, ctx: Context) -> StageResult:
    """Load, search every budget, write the outputs."""
    cfg = params.search
    student, _ = load_student(paths.student)
    teacher = load_teacher(paths.teacher).generator
    if teacher.cfg.resolution != student.cfg.resolution:
        raise PipelineError(f"search: student ({student.cfg.resolution}) and teacher "
                            f"({teacher.cfg.resolution}) resolutions differ")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lpips = lpips_network(params.metric_networks, cfg.lpips, ctx.cache_dir, device)
    teacher = teacher.to(device).eval()
    key = key_of(cfg, lpips)

    def on_generation(name: str, gen: int, best: Scored) -> None:
        if ctx.tracker:
            ctx.tracker.log_metrics({f"best_fitness/{name}": best.distances[key],
                                     f"best_gmacs/{name}": best.macs / 1e9}, step=gen)

    space, full, results = search_all(student, teacher, lpips, cfg, device, ctx.progress,
                                      on_generation, default_dir() if cfg.latency.cache else None)
    metrics = write_outputs(space, full, results, cfg, lpips, Path(paths.out), Path(paths.plots),
                            sha256_file(paths.student))
    for r in results:
        log.info("budget %s (%s): %.3f GMAC, %s %.4f vs uniform %.4f at %.3f GMAC", r.name,
                 r.budget.text, r.best.macs / 1e9, key, r.best.distances[key],
                 r.uniform.distances[key], r.uniform.macs / 1e9)
        if r.measured and r.macs_search:
            log.info("budget %s: measured %.3f ms (uniform %.3f ms); the MAC search at the "
                     "uniform's %.3f GMAC: %s %.4f", r.name, r.measured.best_ms,
                     r.measured.uniform_ms, r.uniform.macs / 1e9, key,
                     r.macs_search.best.distances[key])
    return StageResult(metrics, {paths.out: NAME, paths.plots: NAME},
                       {"lpips_network": lpips.name}, stand_ins(lpips))
