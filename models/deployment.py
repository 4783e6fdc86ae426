"""A model's deployment (pure): champion, canary and weight, shadows, routing key, revision,
a running experiment's arms (they take over the split), and the changes to it — JSON Merge
Patch documents (RFC 7386), promote and roll back. The store
keeps it (``store.deployments``, a compare-and-set on the revision); routing reads it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from models.errors import DeploymentInvalid, StateConflict

HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
DEFAULT_HEADER = "X-Routing-Key"
PATCHABLE = {"canary", "shadows", "routing_key_header"}
HISTORY_LIMIT = 50


@dataclass(frozen=True)
class Canary:
    version: str
    weight: float


@dataclass(frozen=True)
class Shadow:
    version: str
    sample_rate: float = 1.0


@dataclass(frozen=True)
class Arm:
    """An experiment's arm: a version and its share of the traffic."""

    version: str
    share: float


@dataclass(frozen=True)
class Deployment:
    model: str
    champion: str
    canary: Canary | None = None
    shadows: tuple[Shadow, ...] = ()
    routing_key_header: str = DEFAULT_HEADER
    salt: str = ""
    revision: int = 0
    history: tuple[str, ...] = field(default=(), compare=False)
    arms: tuple[Arm, ...] = ()  # a running experiment's: they route instead of the canary

    def versions(self) -> set[str]:
        """Every version this deployment needs loaded."""
        names = {self.champion, *(s.version for s in self.shadows)}
        if self.canary is not None:
            names.add(self.canary.version)
        return names | {a.version for a in self.arms}

    def to_doc(self) -> dict[str, Any]:
        """The stored document (no model, no revision: those are columns)."""
        return {
            "champion": {"version": self.champion},
            "canary": None if self.canary is None else
            {"version": self.canary.version, "weight": self.canary.weight},
            "shadows": [{"version": s.version, "sample_rate": s.sample_rate}
                        for s in self.shadows],
            "routing_key_header": self.routing_key_header,
            "salt": self.salt,
            "history": list(self.history),
            **({"experiment": {"arms": {a.version: a.share for a in self.arms}}}
               if self.arms else {}),
        }

    def to_public(self) -> dict[str, Any]:
        """What the admin API shows (the salt stays private)."""
        doc = self.to_doc()
        doc.pop("salt")
        return {"model": self.model, **doc, "revision": self.revision}

    @classmethod
    def from_doc(cls, model: str, revision: int, doc: dict[str, Any]) -> Deployment:
        """Build and validate a deployment from a document; raises ``DeploymentInvalid``."""
        champion = doc.get("champion")
        if not isinstance(champion, dict) or not isinstance(champion.get("version"), str):
            raise DeploymentInvalid("champion", "must be an object with a version")
        canary = doc.get("canary")
        parsed_canary = None
        if canary is not None:
            if not isinstance(canary, dict) or set(canary) - {"version", "weight"}:
                raise DeploymentInvalid("canary", "must be {version, weight} or null")
            version, weight = canary.get("version"), canary.get("weight", 0.0)
            if not isinstance(version, str):
                raise DeploymentInvalid("canary.version", "is required and must be a string")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or \
                    not 0.0 <= weight <= 1.0:
                raise DeploymentInvalid("canary.weight", "must be a number from 0 to 1")
            if version == champion["version"]:
                raise DeploymentInvalid("canary.version", "is already the champion")
            parsed_canary = Canary(version, float(weight))
        shadows_doc = doc.get("shadows", [])
        if not isinstance(shadows_doc, list):
            raise DeploymentInvalid("shadows", "must be a list of {version, sample_rate}")
        shadows = []
        seen: set[str] = set()
        for i, s in enumerate(shadows_doc):
            where = f"shadows[{i}]"
            if not isinstance(s, dict) or set(s) - {"version", "sample_rate"}:
                raise DeploymentInvalid(where, "must be {version, sample_rate}")
            version, rate = s.get("version"), s.get("sample_rate", 1.0)
            if not isinstance(version, str):
                raise DeploymentInvalid(f"{where}.version", "is required and must be a string")
            if isinstance(rate, bool) or not isinstance(rate, int | float) or \
                    not 0.0 < rate <= 1.0:
                raise DeploymentInvalid(f"{where}.sample_rate", "must be in (0, 1]")
            if version in seen:
                raise DeploymentInvalid(f"{where}.version", "is listed twice")
            if version == champion["version"] or (
                    parsed_canary is not None and version == parsed_canary.version):
                raise DeploymentInvalid(f"{where}.version",
                                        "already serves traffic as champion or canary")
            seen.add(version)
            shadows.append(Shadow(version, float(rate)))
        header = doc.get("routing_key_header", DEFAULT_HEADER)
        if not isinstance(header, str) or not HEADER_RE.match(header):
            raise DeploymentInvalid("routing_key_header", "must be an HTTP header name")
        return cls(model=model, champion=champion["version"], canary=parsed_canary,
                   shadows=tuple(shadows), routing_key_header=header,
                   salt=str(doc.get("salt") or ""), revision=revision,
                   history=tuple(doc.get("history", ())), arms=parse_arms(doc.get("experiment")))


def parse_arms(doc: Any) -> tuple[Arm, ...]:
    """``{"arms": {version: share}}`` (shares positive, summing to 1), or none."""
    if doc is None:
        return ()
    arms = doc.get("arms") if isinstance(doc, dict) else None
    if not isinstance(arms, dict) or len(arms) < 2:
        raise DeploymentInvalid("experiment.arms", "must map two or more versions to shares")
    for version, share in arms.items():
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise DeploymentInvalid(f"experiment.arms.{version}", "must be a share in (0, 1]")
    if abs(sum(arms.values()) - 1.0) > 1e-6:
        raise DeploymentInvalid("experiment.arms", "the shares must sum to 1")
    return tuple(Arm(str(v), float(w)) for v, w in arms.items())


def with_arms(current: Deployment, arms: dict[str, float] | None) -> Deployment:
    """The deployment with an experiment's arms (validated), or with none."""
    doc = current.to_doc()
    doc.pop("experiment", None)
    if arms:
        doc["experiment"] = {"arms": arms}
    return Deployment.from_doc(current.model, current.revision, doc)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(current: Deployment, patch: Any) -> Deployment:
    """The deployment after a merge patch; only canary, shadows and the key header move."""
    if not isinstance(patch, dict):
        raise DeploymentInvalid("body", "a merge patch must be a JSON object")
    unknown = sorted(set(patch) - PATCHABLE)
    if unknown:
        reason = ("changes only through promote and rollback" if unknown[0] == "champion"
                  else f"is not a patchable field (patchable: {sorted(PATCHABLE)})")
        raise DeploymentInvalid(unknown[0], reason)
    doc = merge_patch(current.to_doc(), patch)
    doc.setdefault("canary", None)
    return Deployment.from_doc(current.model, current.revision, doc)


def promoted(current: Deployment) -> Deployment:
    """The canary becomes champion; the old champion goes to history. With no canary there
    is nothing to promote: ``StateConflict``, as the request itself is well formed."""
    if current.canary is None:
        raise StateConflict("canary", "there is no canary to promote")
    history = (*current.history, current.champion)[-HISTORY_LIMIT:]
    shadows = tuple(s for s in current.shadows if s.version != current.canary.version)
    return Deployment(model=current.model, champion=current.canary.version, canary=None,
                      shadows=shadows, routing_key_header=current.routing_key_header,
                      salt=current.salt, revision=current.revision, history=history)


def rolled_back(current: Deployment) -> Deployment:
    """The previous champion comes back; the canary is cleared (``StateConflict`` when
    there is none)."""
    if not current.history:
        raise StateConflict("history", "there is no previous champion to roll back to")
    previous = current.history[-1]
    shadows = tuple(s for s in current.shadows if s.version != previous)
    return Deployment(model=current.model, champion=previous, canary=None, shadows=shadows,
                      routing_key_header=current.routing_key_header, salt=current.salt,
                      revision=current.revision, history=current.history[:-1])
