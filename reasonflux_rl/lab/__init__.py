"""The lab: a tiny reasoning task on which the PRM reward's effect can be seen in minutes on a CPU.

``task.py`` holds the task (problems, right and corrupted solutions, a step-by-step judge); ``build.py`` trains the
warm-start policy and the PRM on it (``reasonflux-rl lab build``); ``assets/`` holds the shipped policy and PRM that
the default training run (``recipes/lab/cpu.yaml``) starts from.
"""
