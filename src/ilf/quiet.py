"""Silence exactly one advice that does not apply to ilf: transformers' "requires torchvision (not installed)".

transformers 5 warns once per image-processor name (`CLIPImageProcessor`, `SiglipImageProcessor`, ...) that
diffusers' pipeline modules import, when torchvision is missing, and then falls back to the PIL processor. ilf
never installs torchvision (it does not import beside the pinned torch) and uses no image processor, so the
advice to install it would mislead. The filter sits on the logger that emits it
(`transformers.utils.import_utils`, in `_LazyModule.__getattr__`) and drops only records of that text.
"""

from __future__ import annotations

import logging

TORCHVISION_ADVICE = "requires torchvision (not installed)"
EMITTING_LOGGER = "transformers.utils.import_utils"


class _DropTorchvisionAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_ADVICE not in record.getMessage()


def silence_torchvision_advice() -> None:
    """Install the filter once (idempotent). Needs no import of transformers: the logger is created by name."""
    logger = logging.getLogger(EMITTING_LOGGER)
    if not any(isinstance(f, _DropTorchvisionAdvice) for f in logger.filters):
        logger.addFilter(_DropTorchvisionAdvice())
