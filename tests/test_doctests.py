"""The examples in docstrings are tests too."""

from __future__ import annotations

import doctest

import pytest

import models.card
import monitoring.log.pii
import monitoring.status
import service.cluster
import service.routing


@pytest.mark.parametrize("module", [models.card, monitoring.log.pii, monitoring.status,
                                    service.cluster,
                                    service.routing])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
