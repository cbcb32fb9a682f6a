"""The engine every exercise's grader uses (its API is described in exercises/ENGINE.md).

    from exercises.grading import Exercise, Trace
"""

from exercises.grading.engine import Exercise, Grade, LoadError, grade, load_exercises, load_learner
from exercises.grading.trace import Expectation, Trace

__all__ = [
    "Exercise",
    "Expectation",
    "Grade",
    "LoadError",
    "Trace",
    "grade",
    "load_exercises",
    "load_learner",
]
