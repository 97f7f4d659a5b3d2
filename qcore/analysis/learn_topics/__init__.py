"""Five Learn-page topics, each a claim from the quantization literature checked on the loaded model.

Every topic returns a typed report with the measured numbers and a `Verdict`: `holds` is True
(the model agrees with the claim), False (it does not) or None (the claim is about something this
model does not have), decided by an explicit rule over the numbers in the report, and `reason` is a
short code the page turns into words in the user's language (so no sentence is built here).

The rules and their thresholds are module constants, so a page can print the rule it applied.
"""

from qcore.analysis.learn_topics.common import *  # noqa: F401,F403
from qcore.analysis.learn_topics.dynamic import *  # noqa: F401,F403
from qcore.analysis.learn_topics.fp16 import *  # noqa: F401,F403
from qcore.analysis.learn_topics.lowbit import *  # noqa: F401,F403
from qcore.analysis.learn_topics.runs import *  # noqa: F401,F403
from qcore.analysis.learn_topics.smoothquant import *  # noqa: F401,F403
from qcore.analysis.learn_topics.spread import *  # noqa: F401,F403

__all__ = ["Verdict", "LATENCY_MARGIN", "LINEAR_HEAVY_SHARE", "ACCURACY_MARGIN", "FP16_MAX", "BF16_MAX", "SMOOTH_ALPHA", "DynamicStaticReport",
           "SMOOTH_GAP", "linear_mac_share", "dynamic_verdict", "LowBitReport", "lowbit_errors", "lowbit_accuracy", "lowbit_verdict",
           "SmoothQuantReport", "smoothquant_topic", "smoothquant_verdict", "Fp16Report", "fp16_overflow",
           "fp16_verdict", "SpreadReport", "channel_spreads", "spread_accuracy", "spread_verdict", "TOPIC_RUNS",
           "LowbitRun", "SpreadRun", "SmoothQuantRun", "measure_topic"]
