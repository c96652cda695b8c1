"""ibau: remove backdoors from image classifiers with I-BAU (Implicit Backdoor Adversarial Unlearning)."""
__version__ = "0.1.0"

from .unlearn import IBAUConfig, RoundRecord, UnlearnResult, unlearn  # noqa: E402

__all__ = ["IBAUConfig", "RoundRecord", "UnlearnResult", "__version__", "unlearn"]
