"""Fleet canary rollouts (``edge-runtime rollout``): the plan, which devices are in a step, and
the statistics that decide whether a step promotes, holds or rolls back.

These are the parts of the controller that decide; each is a pure function of its inputs, so
the decisions can be checked exhaustively without a fleet.
"""

from edge_runtime.fleet.rollout.analysis import Decision, Figures, decide, wilson
from edge_runtime.fleet.rollout.membership import in_step, members
from edge_runtime.fleet.rollout.plan import Plan, Step, load_plan

__all__ = ["Decision", "Figures", "Plan", "Step", "decide", "in_step", "load_plan", "members", "wilson"]
