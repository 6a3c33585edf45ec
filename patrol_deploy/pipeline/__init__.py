"""The run, stage by stage, in one run folder: `run.run_all` calls `compare.compare` (baseline, PATROL, the
`pruned` and `deep_undefended` ablations, matched defenses, every attack, report.json / report.html), then
`deploy.deploy_edge` (export, quantize attempt by attempt, each gated by `verify.verify_run`). docs/architecture.md
draws it. Import the modules directly (`from patrol_deploy.pipeline.run import run_all`)."""
