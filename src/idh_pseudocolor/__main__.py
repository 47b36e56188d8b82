"""``python -m idh_pseudocolor``: the ``idh-pseudocolor`` command of pyproject's
``[project.scripts]`` (:func:`idh_pseudocolor.cli.main`: ``phantom``, ``predict``), for an
environment whose scripts folder is not on PATH. Pipelines run with ``kedro run``.
"""

from idh_pseudocolor.cli import main

if __name__ == "__main__":
    main()
