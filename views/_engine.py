"""Every engine module the pages import, imported once, here, in one fixed order, before any page runs.

Why: Streamlit runs each session's script in its own thread, so simultaneous first visitors import the engine
concurrently. Python's import takes a submodule's lock before its package's: a page importing
`qcore.workflow` (whose report imports `qcore.train.qat.report`, taking that lock, then its package
`qcore.train.qat`) and a page importing `qcore.train.qat` (whose __init__ imports that same report) took the two
locks in opposite orders, and Python ended one session with `_DeadlockError` (seen in tests/e2e/test_load.py
with eight deep links at once). app.py imports this module first: the first session imports the engine here,
every other waits on this module's own lock until it is done, and no page imports anything new afterwards.
tests/test_layout.py checks that every qcore module a page imports is in this list.
"""

import qcore.analysis  # noqa: F401
import qcore.analysis.diagnosis  # noqa: F401
import qcore.analysis.diagnosis_causes  # noqa: F401
import qcore.analysis.evaluate  # noqa: F401
import qcore.analysis.experiments  # noqa: F401
import qcore.analysis.graph_layout  # noqa: F401
import qcore.analysis.graph_metrics  # noqa: F401
import qcore.analysis.layers  # noqa: F401
import qcore.analysis.partial  # noqa: F401
import qcore.analysis.recovery  # noqa: F401
import qcore.analysis.whatif  # noqa: F401
import qcore.figures  # noqa: F401
import qcore.i18n  # noqa: F401
import qcore.quant.calibration  # noqa: F401
import qcore.quant.isa  # noqa: F401
import qcore.quant.lowbit  # noqa: F401
import qcore.quant.qconfig  # noqa: F401
import qcore.quant.quantsim  # noqa: F401
import qcore.quant.recovery.graph  # noqa: F401
import qcore.quant.recovery.reconstruct  # noqa: F401
import qcore.run.executors  # noqa: F401
import qcore.run.job_log  # noqa: F401
import qcore.run.jobs  # noqa: F401
import qcore.run.ray_jobs  # noqa: F401
import qcore.run.requests  # noqa: F401
import qcore.run.scheduler  # noqa: F401
import qcore.runtime.backends.x86  # noqa: F401
import qcore.runtime.deploy  # noqa: F401
import qcore.runtime.dynamic_study  # noqa: F401
import qcore.runtime.partial  # noqa: F401
import qcore.store  # noqa: F401
import qcore.train.qat  # noqa: F401
import qcore.workflow  # noqa: F401
import qcore.workflow.document  # noqa: F401
import qcore.zoo.data  # noqa: F401
import qcore.zoo.images  # noqa: F401
import qcore.zoo.inputs  # noqa: F401
import qcore.zoo.models  # noqa: F401
import qcore.zoo.preprocess  # noqa: F401
import qcore.zoo.timm_models  # noqa: F401
import qcore.zoo.user_models  # noqa: F401
