"""PetDream: a personal image model of someone's pet (DreamBooth on Stable Diffusion),
and a supportive companion that draws it. See README.md for the architecture."""

__version__ = "0.1.0"
