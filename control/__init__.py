"""The control plane: the operations that change what serves, each one path for every entry
point (the admin API, the CLI through it, the rollout controller). It uses models/ (the
domain) and store/ (persistence) and knows nothing of HTTP."""

from control.deployments import (
    Actor,
    Change,
    change_deployment,
    commit_change,
    plan_change,
)

__all__ = ["Actor", "Change", "change_deployment", "commit_change", "plan_change"]
