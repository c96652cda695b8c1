"""The layer above the algorithms, shared by the CLI, the demo and the grid: train a poisoned model
(:mod:`.train`), run a defense with held-out evaluation (:mod:`.defend`), and write a run's files
(:mod:`.artifacts`: report.md and plots; the JSON records themselves are :mod:`ibau.records`)."""
