"""``autovi reproduce``: re-run a paper's grid from a recipe and compare every cell with the paper.

- :mod:`.recipe`: recipe files (the grid and the tables' layout) and the paper's numbers;
- :mod:`.compare`: our cells beside the paper's, Welch's t-test, Markdown / CSV / HTML;
- :mod:`.plan`: the recipe's experiments as :class:`~autovi_core.experiment.Task` objects, the
  weights they need and the time they are expected to take (``--dry-run``).
"""
