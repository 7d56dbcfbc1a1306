"""segexp's Optuna sweeper (the Hydra plugin in hydra_plugins/segexp_sweeper calls it): search
spaces, shared studies and their parent runs, the worker loop. May import training and everything
below it (it starts no training itself: Hydra's launcher runs the jobs)."""
