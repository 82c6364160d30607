"""Optuna sweeps that answer a hyperparameter question: `imgrec sweep sweep=cnn_kernel [overrides]`.

Modules: space (search space -> overrides), storage (storage URLs, the exact budget, heartbeats), pruning (the
reporting callback), constraint (a metric each answer must keep), pareto (the front of two objectives), report
(answer.md, trials.csv, plots). The
driver (the Sweep: configs, study, trials, parent run) is imgrec.verbs.sweep.

A sweep (conf/sweep/NAME.yaml, composed through conf/verbs/sweep.yaml) names a question, a metric,
a search space over config keys, base overrides, a sampler, a pruner and a budget. Each trial composes
conf/train.yaml with base + command-line + sampled overrides (later wins) and calls the same
`imgrec.train.train` as train.py; a callback reports the metric to Optuna after every validation epoch
so the pruner can stop hopeless trials. Optuna (>= 5) is driven directly through ask/tell.

Several processes or machines running the same command share one study (storage URL + study name):

- Budget: `n_trials` is the study's total. Optuna numbers a study's trials in the order the storage
  creates them (one at a time per study), so a trial runs only if fewer than `n_trials` budget trials
  precede it. A worker racing past the budget marks its new trial surplus (FAIL, user attr
  imgrec.surplus, ignored by reports and counts) and stops: exactly `n_trials` trials run however many
  workers there are, and re-running tops the study up. Trials of dead workers (heartbeats, RDB storage)
  or interrupted by Ctrl-C are re-queued as retries that take their original's slot.
- MLflow: the one process whose create_study succeeds (the storage's unique study name decides) creates
  the study's parent run and publishes its id as a study user attr; the others wait for it. Each trial
  is a child run (mlflow.parentRunId). A pruned trial's run ends KILLED with tag optuna.pruned=true.
- Pruning needs the trainer in this process: with a multi-process trainer (ddp_spawn) trials run
  unpruned; strategies that re-run the command per rank (ddp, torchrun) would start more sweep workers
  and are refused. Scale out with one device per trial and several workers instead.
"""
