"""Training: the job (composition root), its setup and build, the fit loop and its callbacks,
what it monitors, the resumable state, resume, distribution, interrupts, faults, losses and
schedules. May import evaluation and everything below it."""
