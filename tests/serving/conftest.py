"""Fixtures shared by the serving tests: one tiny causal backbone per module, and an engine over
the prompts of :func:`tests.serving.prompts_dir`."""

import pytest

from conftest import make_backbone
from softprompt.serving import MultiPromptModel

from . import prompts_dir


@pytest.fixture(scope="module")
def backbone():
    return make_backbone("causal")


@pytest.fixture
def engine(backbone, tmp_path):
    return MultiPromptModel.from_dir(backbone, prompts_dir(tmp_path / "prompts", backbone))
