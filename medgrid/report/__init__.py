"""The report layer: every cell's table into one summary and what a reader sees of it.

``aggregate`` (the summary and its by-seed view), ``history`` (per-epoch training records), ``headline`` and
``headline_write`` (the headline table and its CSV, LaTeX, HTML, Markdown), ``registry`` (every chart's
name, title and report label: read by ``render`` and by workflow/rules/report.smk), ``charts``,
``chart_parts``, ``chart_health``, ``chart_training`` (the Altair specs), ``render`` (files), ``audit`` (the
evaluation audit page) and ``saliency`` (the input-gradient figure). ``registry`` is plain Python: the
workflow imports it without pandas or altair.
"""
