"""Where the report's tables used to live; every name is re-exported from its own module, so old imports keep working:

- `kpretrain.report.summary`: the rows and statistics read from metrics.json (summary rows, `arm_statistics`, the
  benefit column, and the Holm family: computed once, stored, read back by every renderer);
- `kpretrain.report.markdown`: report.md of a run and of a sweep, verdict lines, notes, the markdown table;
- `kpretrain.report.csv_rows`: the rows table of `kpretrain report`, CSV fields and flat rows, `history.csv`.
"""

from __future__ import annotations

from kpretrain.report.csv_rows import CSV_FIELDS, benefit_text, flat_row, history_csv, interval, pct, rows_table
from kpretrain.report.markdown import (averaging_lines, benefit_note, convergence_lines, holm_note, learning_rate_lines,
                                       markdown_table, probe_confusion_lines, run_report, selftrain_lines,
                                       sweep_report, verdict_lines)
from kpretrain.report.summary import (BASELINE, arm_statistics, holm_adjusted, holm_family, mean_std, reference_arm,
                                      store_sweep_holm, summary_rows)

__all__ = ["BASELINE", "CSV_FIELDS", "arm_statistics", "averaging_lines", "benefit_note", "benefit_text",
           "convergence_lines", "flat_row", "history_csv", "holm_adjusted", "holm_family", "holm_note", "interval",
           "learning_rate_lines", "markdown_table", "mean_std", "pct", "probe_confusion_lines", "reference_arm",
           "rows_table", "run_report", "selftrain_lines", "store_sweep_holm", "summary_rows", "sweep_report",
           "verdict_lines"]
