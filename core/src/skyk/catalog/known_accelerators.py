"""Every accelerator name SkyPilot knows, whether or not an installed cloud offers it.

A task written for SkyPilot may name an accelerator that none of skyk's
installed clouds sells (``L40`` in ``{L4, A10g, A10, L40, A40, A100}``). Such
a name is real, not a typo: inside a choice it is simply an option nothing
fits, and alone it gets "no installed cloud offers L40". Only a name missing
here and from every catalog is unknown (and gets a did-you-mean).

The names are SkyPilot's canonical spellings (matched case-insensitively):
its common GPUs (``sky show-gpus``), the other GPUs its catalogs list, and
its registry's non-GPU accelerators. Names with spaces ("Gaudi HL-205",
"Radeon Pro V520") are left out: a task cannot write them as NAME:COUNT.
"""

from __future__ import annotations

#: SkyPilot's common GPUs, as ``sky show-gpus`` lists them first.
COMMON_GPUS = ("A10", "A10G", "A100", "A100-80GB", "H100", "H200", "L4", "L40S", "P100",
               "T4", "V100", "V100-32GB")

#: Other accelerators SkyPilot's catalogs and registry name.
OTHER_ACCELERATORS = (
    "A100-80GB-SXM", "A40", "A4000", "A5000", "A6000", "B100", "B200", "GB200", "GH200",
    "H100-MEGA", "H100-SXM", "H200-SXM", "K520", "K80", "L40", "M60", "MI25", "MI300X", "P4",
    "P40", "RTX3060", "RTX3070", "RTX3080", "RTX3090", "RTX4080", "RTX4090", "RTX5090",
    "RTX6000", "RTX6000-Ada", "RTXA4000", "RTXA5000", "RTXA6000", "T4g", "Inferentia",
    "Inferentia2", "Trainium", "Trainium2",
)

#: Every name above.
KNOWN_ACCELERATORS = COMMON_GPUS + OTHER_ACCELERATORS
