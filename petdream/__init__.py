"""PetDream: a personal image model of someone's pet (DreamBooth on Stable Diffusion),
and a supportive companion that draws it. See README.md for the architecture."""

import logging
import os

# Back torch's large CPU tensors (2 MB and up) with transparent huge pages. A CPU training step
# allocates and frees gigabytes of activations; on 4 KiB pages the kernel faults and zeroes each
# page anew every step (5.2 M faults in 8 sd15-sized steps, against 0.47 M with huge pages), and
# the step takes 7-11% longer (benchmarks/README.md). torch reads this once, at its first large
# allocation, so it is set here, before anything imports torch. A person's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# bitsandbytes warns as it is imported (by diffusers and peft), on CPUs with AVX512-BF16, that the optional
# package of its 4-bit CPU kernels is missing: a scary line atop every CLI run. PetDream uses no 4-bit kernel.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
