"""EvaluationReport: the numbers of one run, and the files it is read in.

`save(folder)` writes (the JSON is a contract, described in the README):

    <folder>/
      report.json     every number, per prompt and overall, for the pet and the base model
      report.md       the paper's Table I (CLIPScore, SSIM) and DreamBench's table (DINO, CLIP-I, CLIP-T)
      grid.png        one row per prompt: the pet's images, then the base model's
      fidelity.png    subject fidelity (DINO, CLIP-I) against prompt fidelity (CLIP-T), per prompt
      images/pet/NN-<prompt>-seed<i>.png   images/baseline/...
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from petdream.evaluation.config import EvaluationConfig
from petdream.evaluation.metrics import FID_MIN_IMAGES, Scores
from petdream.evaluation.prompts import EvaluationPrompt
from petdream.models import Profile
from petdream.petmodel import PetModel

# DreamBooth on Stable Diffusion in DreamBench (Ruiz et al. 2023, Table 1), drawn on the chart.
DREAMBENCH_DREAMBOOTH_SD = {"dino": 0.668, "clip_i": 0.803, "clip_t": 0.305}
# How far the pet model must be from the base model for the verdict to call it better or worse: DreamBench's
# methods differ by a few hundredths to a tenth (DINO 0.668 DreamBooth against 0.569 Textual Inversion; CLIP-T
# 0.305 against 0.255). A fine-tune gives up some prompt fidelity as it learns a subject, so CLIP-T may fall a
# little before the verdict calls it. Below FEW_PICTURES a picture's luck moves the means by as much: said so.
LIKENESS_MARGIN = 0.02  # DINO
PROMPT_MARGIN = 0.02  # CLIP-T
FEW_PICTURES = 20
MODELS = ("pet", "baseline")


@dataclass
class PromptResult:
    prompt: EvaluationPrompt
    scores: Scores
    images: list[Image.Image]  # image i was drawn with seed i


def report_files(folder: str | Path) -> dict[str, Path]:
    """Where `EvaluationReport.save` puts its files in `folder`, by part: json, markdown, grid, chart."""
    return {name: Path(folder) / file for name, file in (
        ("json", "report.json"), ("markdown", "report.md"), ("grid", "grid.png"), ("chart", "fidelity.png"))}


@dataclass
class ModelResult:
    """One model's images and scores: the pet's, or the base model's (the baseline)."""

    model: str  # the pet model's folder, or the base model's id
    prompts: list[PromptResult]
    overall: Scores  # over every image of every prompt
    fid: float | None  # all images against the photos; None when a set has fewer than 2 images

    @property
    def n_images(self) -> int:
        return sum(len(result.images) for result in self.prompts)


@dataclass
class EvaluationReport:
    pet: PetModel
    profile: Profile
    config: EvaluationConfig
    result: ModelResult  # the pet's
    baseline: ModelResult | None  # the base model's, on the same prompts and seeds; None with --no-baseline
    n_photos: int
    warnings: list[str]
    seconds: float

    def models(self) -> list[tuple[str, ModelResult]]:
        return [(which, result) for which, result in zip(MODELS, (self.result, self.baseline)) if result]

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The report.json object; `images` are paths relative to the report's folder."""
        return {
            "model": self.result.model,
            "model_created_at": self.pet.created_at,  # which training of the pet: its folder may move, this stays
            "pet": {"name": self.pet.pet.name, "trigger": self.pet.pet.trigger, "class_noun": self.pet.pet.class_noun},
            "profile": self.profile.name,
            "random_weights": self.profile.random_weights,
            "settings": {
                **self.config.to_dict(),
                "base_model": self.profile.base_model_id,
                "clip_model": self.profile.clip_model,
                "dino_model": self.profile.dino_model,
            },
            **self._model_dict("pet", self.result),
            "n_photos": self.n_photos,
            "baseline": self._model_dict("baseline", self.baseline) if self.baseline else None,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 1),
        }

    def _model_dict(self, which: str, result: ModelResult) -> dict:
        prompts = [
            {"prompt": item.prompt.text, "caption": item.prompt.caption, **item.scores.to_dict(),
             "images": [str(path) for path in image_paths(which, index, item)]}
            for index, item in enumerate(result.prompts, start=1)
        ]
        return {"model": result.model, "prompts": prompts, "overall": result.overall.to_dict(),
                "fid": result.fid, "n_images": result.n_images}

    def summary(self) -> str:
        """One line of the overall numbers; "pet / base model" with a baseline."""
        pet, base = self.result, self.baseline

        def pair(name: str, digits: int, scale: float = 1) -> str:
            value = _figure(pet.overall, name, scale, digits)
            return value if base is None else f"{value} / {_figure(base.overall, name, scale, digits)}"

        fid = "n/a" if pet.fid is None else f"{pet.fid:.1f}"
        if base is not None and base.fid is not None:
            fid += f" / {base.fid:.1f}"
        return (f"overall{' (pet / base model)' if base else ''}: CLIPScore {pair('clip_score', 2)}, "
                f"SSIM x 100 best {pair('ssim_best', 2, 100)}, mean {pair('ssim_mean', 2, 100)} (as in Table I), "
                f"DINO {pair('dino', 3)}, "
                f"CLIP-I {pair('clip_i', 3)}, CLIP-T {pair('clip_t', 3)}, FID {fid}")

    def verdict(self) -> list[str]:
        """What the numbers say, in plain words, for the person whose pet it is: does the model draw their pet
        (DINO against the base model's pictures of any such animal), does it still draw what is asked for
        (CLIP-T against the base model's). Empty without a baseline: there is nothing to compare with."""
        if self.baseline is None:
            return []
        pet, base, name, kind = self.result.overall, self.baseline.overall, self.pet.pet.name, self.pet.pet.class_noun
        lines = []
        if self.result.n_images < FEW_PICTURES:
            lines.append(f"ℹ️ From {self.result.n_images} pictures of your pet's model (and as many of the base "
                         "model's), a rough sign: the full check is surer.")
        dino = f"DINO {pet.dino:.2f} against {base.dino:.2f}, where 1 is identical"
        if pet.dino > base.dino + LIKENESS_MARGIN:
            lines.append(f"✅ **Looks like {name}**: its pictures are closer to your photos than the base model's "
                         f"pictures of any {kind} ({dino}).")
        elif pet.dino >= base.dino - LIKENESS_MARGIN:
            lines.append(f"➖ **Not yet like {name}**: its pictures are about as close to your photos as the base "
                         f"model's pictures of any {kind} ({dino}). Train longer, or on more varied photos.")
        else:
            lines.append(f"❌ **Less like {name} than the base model's pictures of any {kind}** ({dino}): the "
                         "training went wrong. Train again with a lower learning rate.")
        clip_t = f"CLIP-T {pet.clip_t:.3f} against {base.clip_t:.3f}"
        if pet.clip_t >= base.clip_t - PROMPT_MARGIN:
            lines.append(f"✅ **Draws what you ask for** as well as the base model ({clip_t}).")
        else:
            lines.append(f"⚠️ **Follows the prompts less than the base model** ({clip_t}): it draws your photos "
                         "more than the scene asked for. Some of that comes with learning a pet; much is a sign of "
                         "overtraining, which fewer steps or a lower learning rate help.")
        return lines

    # -- files -----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write the images, report.json, report.md, grid.png and fidelity.png; return their paths."""
        folder = Path(folder)
        for which, result in self.models():
            for index, item in enumerate(result.prompts, start=1):
                for path, image in zip(image_paths(which, index, item), item.images):
                    (folder / path).parent.mkdir(parents=True, exist_ok=True)
                    image.save(folder / path)
        paths = report_files(folder)
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        paths["markdown"].write_text(self.to_markdown())
        self.grid().save(paths["grid"])
        self.plot_fidelity(paths["chart"])
        return paths

    # -- Markdown --------------------------------------------------------------------------

    def to_markdown(self, verdict: bool = True) -> str:
        """Two tables, one row per prompt and an overall row; with a baseline, each cell reads
        "pet / base model (gain)". verdict: with its "In short" (a page that says it above leaves it out)."""
        config, pet = self.config, self.pet.pet
        base = " / base model (gain)" if self.baseline else ""
        lines = [f"# Evaluation of {pet.name} (\"{pet.phrase}\")", ""]
        if self.profile.random_weights:
            lines += [f"> **{self.profile.name} profile: random weights; these numbers mean nothing.**", ""]
        if self.baseline is not None and verdict:
            lines += ["## In short", "", *[f"- {line}" for line in self.verdict()], ""]
        lines += [
            f"{self._model_line()} on `{self.profile.base_model_id}` (profile {self.profile.name}). "
            f"{_count(len(self.result.prompts), 'prompt')}, {_count(config.images_per_prompt, 'image')} each "
            "(image i with seed i), "
            f"{config.steps} steps, {config.scheduler}, guidance {config.guidance_scale}; "
            f"compared with {self.n_photos} photos. Each cell: pet{base}.",
            "",
            "## Table I of the paper PetDream starts from (Sharma et al.): CLIPScore and SSIM",
            "",
            f"CLIPScore: torchmetrics', 0 to 100. SSIM x 100 at {config.ssim_size} px: *best* is each image "
            "against its most similar photo, *mean* against every photo.",
            "",
            "| # | Prompt | CLIPScore | SSIM best | SSIM mean |",
            "|---|---|---|---|---|",
        ]
        lines += self._rows([("clip_score", 1, 2), ("ssim_best", 100, 2), ("ssim_mean", 100, 2)])
        lines += [
            "",
            "## DreamBench: subject fidelity (DINO, CLIP-I) and prompt fidelity (CLIP-T)",
            "",
            "Mean cosine similarities: DINO and CLIP-I over every (image, photo) pair, CLIP-T of each image with "
            "its prompt (the trigger word left out). DreamBooth on Stable Diffusion scores "
            "{dino} / {clip_i} / {clip_t} on DreamBench.".format(**DREAMBENCH_DREAMBOOTH_SD),
            "",
            "| # | Prompt | DINO | CLIP-I | CLIP-T |",
            "|---|---|---|---|---|",
        ]
        lines += self._rows([("dino", 1, 3), ("clip_i", 1, 3), ("clip_t", 1, 3)])
        lines += ["", "## FID (lower is closer to the photos)", "", self._fid_line(), ""]
        if self.warnings:
            lines += ["## Notes", ""] + [f"- {warning}" for warning in self.warnings] + [""]
        return "\n".join(lines)

    def _model_line(self) -> str:
        """Whose model, how it was trained and when: "Bruno's model (lora, 300 steps, trained 2026-11-26 14:20)"."""
        model, trained = self.pet, []
        steps = model.training.get("steps_done") or model.training.get("steps")
        if steps:
            trained.append(f"{steps} steps")
        if model.created_at:
            trained.append(f"trained {model.created_at[:16].replace('T', ' ')}")  # ISO 8601, to the minute
        return f"{model.pet.name}'s model ({', '.join([model.method, *trained])})"

    def _rows(self, columns: list[tuple[str, float, int]]) -> list[str]:
        """Table rows; a column is (Scores field, scale, decimals)."""
        def cell(pet: Scores, base: Scores | None, name: str, scale: float, digits: int) -> str:
            value = _figure(pet, name, scale, digits)
            if base is None:
                return value
            before = _figure(base, name, scale, digits)
            gain = float(value) - float(before) + 0.0  # + 0.0: no "-0.000"
            return f"{value} / {before} ({gain:+.{digits}f})"

        bases = self.baseline.prompts if self.baseline else [None] * len(self.result.prompts)
        rows = []
        for index, (item, base) in enumerate(zip(self.result.prompts, bases), start=1):
            cells = [cell(item.scores, base and base.scores, *column) for column in columns]
            rows.append(f"| {index} | {_markdown_text(item.prompt.text)} | " + " | ".join(cells) + " |")
        overall_base = self.baseline.overall if self.baseline else None
        cells = [cell(self.result.overall, overall_base, *column) for column in columns]
        rows.append("| | **overall** | " + " | ".join(cells) + " |")
        return rows

    def _fid_line(self) -> str:
        pet, base = self.result, self.baseline
        if pet.fid is None:
            return "Not computed: FID needs at least 2 generated images and 2 photos."
        line = f"{pet.fid:.2f} for the pet ({pet.n_images} images against {self.n_photos} photos)"
        if base is not None and base.fid is not None:
            line += (f"; {base.fid:.2f} for the base model (gain {base.fid - pet.fid:+.2f}: positive means "
                     "training brought the images closer to the photos)")
        if min(pet.n_images, self.n_photos) < FID_MIN_IMAGES:
            line += f". Fewer than {FID_MIN_IMAGES} images in a set: unreliable, compare only pet with base"
        return line + "."

    # -- pictures --------------------------------------------------------------------------

    def grid(self, tile: int = 192) -> Image.Image:
        """One row per prompt, labelled: the pet's images, a gap, then the base model's."""
        label_width, gap, header = 280, 16, 46  # two lines: "base model" over its id, which is long
        models = self.models()
        per_model = self.config.images_per_prompt
        width = label_width + len(models) * (per_model * tile + gap)
        height = header + len(self.result.prompts) * tile
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        font = _font(14)
        for column, (which, result) in enumerate(models):
            left = label_width + column * (per_model * tile + gap)
            draw.multiline_text((left + 4, 6), "pet" if which == "pet" else f"base model\n{self.profile.base_model_id}",
                                fill="black", font=font)
            for row, item in enumerate(result.prompts):
                for i, image in enumerate(item.images):
                    canvas.paste(image.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS),
                                 (left + i * tile, header + row * tile))
        for row, item in enumerate(self.result.prompts):
            text = textwrap.fill(f"{row + 1}. {item.prompt.text}", 34)
            draw.multiline_text((6, header + row * tile + 6), text, fill="black", font=font)
        return canvas

    def plot_fidelity(self, path: str | Path) -> None:
        """Subject fidelity (DINO, and CLIP-I) against prompt fidelity (CLIP-T), one point per
        prompt, pet and base model joined by a line; DreamBench's DreamBooth-SD score as a star."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(11, 4.8), dpi=100)
        FigureCanvasAgg(figure)  # the Agg backend, without pyplot's global state (the app runs this in threads)
        colours = {"pet": "tab:orange", "baseline": "tab:blue"}
        for axes, subject, label in zip(figure.subplots(1, 2), ("dino", "clip_i"), ("DINO", "CLIP-I")):
            if self.baseline:
                for item, base in zip(self.result.prompts, self.baseline.prompts):
                    axes.plot([base.scores.clip_t, item.scores.clip_t],
                              [getattr(base.scores, subject), getattr(item.scores, subject)],
                              color="0.8", linewidth=0.8, zorder=1)
            for which, result in self.models():
                name = "pet" if which == "pet" else "base model"
                axes.scatter([item.scores.clip_t for item in result.prompts],
                             [getattr(item.scores, subject) for item in result.prompts],
                             color=colours[which], s=24, label=f"{name}, per prompt", zorder=2)
                axes.scatter([result.overall.clip_t], [getattr(result.overall, subject)], color=colours[which],
                             s=140, marker="D", edgecolor="black", label=f"{name}, overall", zorder=3)
            for index, item in enumerate(self.result.prompts, start=1):
                axes.annotate(str(index), (item.scores.clip_t, getattr(item.scores, subject)), fontsize=7,
                              xytext=(3, 3), textcoords="offset points")
            axes.scatter([DREAMBENCH_DREAMBOOTH_SD["clip_t"]], [DREAMBENCH_DREAMBOOTH_SD[subject]], marker="*",
                         s=180, color="tab:green", label="DreamBooth (SD) on DreamBench", zorder=3)
            axes.set(xlabel="prompt fidelity: CLIP-T", ylabel=f"subject fidelity: {label}")
            axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")  # once, on the right-hand panel: both panels share it
        title = f"{self.pet.pet.name}: subject vs prompt fidelity (numbers: the prompts in report.md)"
        if self.profile.random_weights:
            title += f"\n{self.profile.name} profile: random weights, these numbers mean nothing"
        figure.suptitle(title, fontsize=11)
        figure.tight_layout()
        figure.savefig(path)


def image_paths(which: str, index: int, item: PromptResult) -> list[Path]:
    """Where save() writes image i of prompt `index`: images/<which>/NN-<prompt>-seed<i>.png."""
    slug = re.sub(r"[^a-z0-9]+", "-", item.prompt.text.lower()).strip("-")[:60]
    return [Path("images", which, f"{index:02d}-{slug}-seed{seed}.png") for seed in range(len(item.images))]


def _figure(scores: Scores, name: str, scale: float, digits: int) -> str:
    """One score as the report shows it: times `scale`, to `digits` decimals (SSIM is shown x 100)."""
    return f"{getattr(scores, name) * scale:.{digits}f}"


def _markdown_text(text: str) -> str:
    return text.replace("|", "\\|")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"
