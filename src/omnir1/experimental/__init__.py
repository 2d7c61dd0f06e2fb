"""Research code: experiments about the method, not part of the product.

`omnir1 study` (does GRPO measurably improve a policy on this data?), its held-out assessment,
warm-start curricula and freshly rendered synthetic clips, and the params of those experiments
(`omnir1.experimental.params.StudyParams`: the product's params plus research-only knobs). The
product (the pipelines, the CLI's stages, the services) never imports this package, and the
DVC stages do not depend on it; its results and dated log are in research/ at the repository
root. APIs here may change without notice.
"""

import warnings


class ExperimentalWarning(UserWarning):
    """Raised once when omnir1.experimental is imported."""


warnings.warn(
    "omnir1.experimental is research code: its APIs and figures may change without notice",
    ExperimentalWarning,
    stacklevel=2,
)
