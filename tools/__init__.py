"""Developer tools, outside the runtime package: run from the project root
(`python -m tools.docs_reference`, `python tools/report_screenshot.py`); nothing in
compare_models, tasks, flows or deployments imports them."""
