"""One module per hypothesis family; importing this package registers every hypothesis id in DESIGN.md."""
from flatline.diagnostics.hypotheses import (  # noqa: F401
    advantage,
    control,
    entropy,
    episodes,
    gradients,
    kl,
    length,
    masking,
    progress,
    reward,
    sync,
    update,
)
