"""Tasks: examples, templates, verbalizers, metrics, and the built-in task registry."""

from softprompt.tasks.data import read_examples, write_examples
from softprompt.tasks.knowledgeable import KnowledgeableVerbalizer  # registers its verbalizer type
from softprompt.tasks.metrics import METRICS, compute_metrics, majority_baseline
from softprompt.tasks.rules import RuleVerbalizer  # registers verbalizer type 'rules' (PTR)
from softprompt.tasks.registry import BUILTIN_TASKS, HUB_SOURCES, get_task, list_tasks, load_split
from softprompt.tasks.task import Task
from softprompt.tasks.template import Part, Template
from softprompt.tasks.verbalizer import (
    VERBALIZER_TYPES,
    AnswerVectorVerbalizer,
    ChoiceVerbalizer,
    LearnedWeightsVerbalizer,
    Verbalizer,
    parse_label_words,
    verbalizer_from_dict,
)

__all__ = [
    "BUILTIN_TASKS",
    "HUB_SOURCES",
    "METRICS",
    "AnswerVectorVerbalizer",
    "ChoiceVerbalizer",
    "KnowledgeableVerbalizer",
    "LearnedWeightsVerbalizer",
    "Part",
    "Task",
    "Template",
    "VERBALIZER_TYPES",
    "Verbalizer",
    "compute_metrics",
    "get_task",
    "list_tasks",
    "load_split",
    "majority_baseline",
    "parse_label_words",
    "read_examples",
    "verbalizer_from_dict",
    "write_examples",
]
