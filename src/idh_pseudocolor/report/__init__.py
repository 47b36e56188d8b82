"""The study's report in three parts, none of them importing Kedro:

- ``stats``: the numbers (Table 2 with bootstrap CIs, DeLong's paired test, calibration, the
  retrain check, what the report states), as pandas frames and plain values;
- ``figures``: the paper's figures (matplotlib), drawn from those frames;
- ``html``: a plain context rendered by the Jinja templates in ``idh_pseudocolor/templates``,
  where all of the report's markup lives (tables as macros in ``macros.j2``).
"""
