"""The PRM kinds: ``step_classifier.py`` (ReasonFlux-PRM-7B, Qwen2.5-Math-PRM; its weight layout in
``step_classifier_model.py``), ``value_head.py`` (ReasonFlux-PRM-1.5B), ``token_logit.py`` (Math-Shepherd style),
``step_value_head.py`` (Skywork-o1-Open-PRM; its weight layout in ``step_value_head_model.py``), ``tagged.py`` (what
the step kinds share) and ``combined.py`` (step scores plus a trajectory score, eq. 11)."""
