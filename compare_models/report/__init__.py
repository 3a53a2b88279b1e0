"""The report: what a person opens after a run. Its data (`data`), how it writes numbers
(`format`), its title and settings (`header`), its figures (`figures`, `diagnostics`, `trends`, `class_balance`),
the HTML page from the Jinja2 templates in `templates/` (`page`), and the files it writes
(`render`: figures, CSV tables, the markdown summary); `assemble` puts a run's report together
from its record and stores it (what the report task calls).

May import: `compare_models.config`, `compare_models.storage`, `compare_models.data`,
`compare_models.evaluation`, `compare_models.statistics` and `compare_models.runs` (the report
reads the run's record, gate decisions included). Never the gate's code or the CLI.
"""
