"""The guided workflow: PTQ baseline -> sensitivity and partial quantization -> QAT, to a target.

It sits above the trainer because step 4 fine-tunes: imports point quant <- zoo <- analysis /
runtime <- train <- workflow <- CLI and app.
"""

from qcore.workflow.report import STEPS, FinalInt8, StepOutcome, WorkflowReport
from qcore.workflow.run import WORKFLOW_METHODS, WorkflowOptions, run_workflow
from qcore.workflow.target import Target, Verdict

__all__ = ["STEPS", "FinalInt8", "StepOutcome", "WorkflowReport", "WORKFLOW_METHODS", "WorkflowOptions",
           "run_workflow", "Target", "Verdict"]
