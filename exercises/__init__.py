"""Exercises that grade themselves: implement a pattern, and a grader judges how it behaves.

Each `exercises/<name>/` holds the task (`README.md`), the file you edit (`starter.py`), the
grader (`grader.py`), a reference solution and wrong solutions that prove the grader can fail.
`make grade` grades them all, `make learn` walks you through them one by one. The engine they
share is `exercises.grading`, described in `exercises/ENGINE.md`.
"""
