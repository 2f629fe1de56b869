"""Fleet-wide compliance reports over the milter's audit trails (Article 2 monitoring).

``qnprov report compliance`` collects each MTA's hash-chained audit trail
(:mod:`~qnprov.reporting.collect`), verifies and counts it in one pass
(:mod:`~qnprov.reporting.figures`), adds the directory's view of agencies and accounts
when the directory answers (:mod:`~qnprov.reporting.directoryview`), and renders one
document of figures as JSON, CSV or a self-contained HTML page with inline SVG charts
(:mod:`~qnprov.reporting.render`, :mod:`~qnprov.reporting.charts`).
"""
