"""DreamBooth training: photos of a pet in, a PetModel folder out (LoRA or full fine-tuning)."""

from petdream.training.config import PRESETS, TrainingConfig
from petdream.training.events import (LIVE_SAMPLES_DIR, Cancelled, CheckpointSaved, Event, Failed, Finished, Note,
                                      Progress, Resumed, Sample)
from petdream.training.trainer import DreamBoothTrainer, TrainingFailure, further_training_settings
from petdream.training.trigger import choose_trigger, new_pet

__all__ = [
    "PRESETS", "TrainingConfig", "DreamBoothTrainer", "TrainingFailure", "further_training_settings",
    "choose_trigger", "new_pet",
    "LIVE_SAMPLES_DIR", "Event", "Note", "Resumed", "Progress", "Sample", "CheckpointSaved", "Finished", "Failed",
    "Cancelled",
]
