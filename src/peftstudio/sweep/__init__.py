"""Hyperparameter sweeps over peftstudio runs, with Optuna."""
