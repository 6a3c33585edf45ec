"""The run, stage by stage, in one run folder: `run.run_all` calls `compare.compare` (baseline, PATROL, the
`pruned` and `deep_undefended` ablations, matched defenses, every attack -> comparison.json), then
`deploy.deploy_edge` (export, quantize attempt by attempt, each gated by `verify.verify_run` -> verify/), then
`render.render_report` (report.json / report.html, once). `attack.attack_model` is the `attack` command's stage.
docs/architecture.md draws it. Import the modules directly (`from patrol_deploy.pipeline.run import run_all`)."""
