"""The lab: a tiny reasoning task on which the PRM reward's effect can be seen in minutes on a CPU.

``task.py`` holds the task (problems, right and corrupted solutions, a step-by-step judge); ``build.py`` trains the
warm-start policy and the PRM on it (``reasonflux-rl lab build``); ``assets/`` holds the shipped policy and PRM that
the default training run (``recipes/lab/cpu.yaml``) starts from. ``thinking.py`` writes and judges the same task as R1
thinks; ``r1_build.py`` trains its policy and two PRMs (``lab build --task r1``), shipped in ``assets/r1/``.
"""
