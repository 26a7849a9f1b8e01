"""Evaluation: how well a pet model draws the pet, and how well it follows prompts.

The paper's metrics (CLIPScore, SSIM), DreamBench's (DINO, CLIP-I, CLIP-T) and FID, on the paper's
two prompts and DreamBench's 25, for the pet model and beside it the base model it started from.

    evaluator = Evaluator(profile)
    for event in evaluator.run(pet_model, photos, EvaluationConfig(images_per_prompt=4)):
        ...  # Note, Progress, then Finished(report) or Failed(reason)
    report.save("eval/bruno")  # report.json, report.md, grid.png, fidelity.png, images/
"""

from petdream.evaluation.config import EvaluationConfig
from petdream.evaluation.evaluator import EvaluationFailure, Evaluator
from petdream.evaluation.events import Event, Failed, Finished, Note, Progress
from petdream.evaluation.metrics import MetricModels, Scores, ScoreSheet
from petdream.evaluation.prompts import DEFAULT_PROMPTS_FILE, EvaluationPrompt, load_prompts, render_prompt
from petdream.evaluation.report import EvaluationReport, ModelResult, PromptResult

__all__ = [
    "EvaluationConfig", "Evaluator", "EvaluationFailure", "EvaluationReport", "ModelResult", "PromptResult",
    "MetricModels", "Scores", "ScoreSheet", "DEFAULT_PROMPTS_FILE", "EvaluationPrompt", "load_prompts",
    "render_prompt", "Event", "Note", "Progress", "Finished", "Failed",
]
