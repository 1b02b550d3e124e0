"""``python -m reasonflux_rl.prm_training train ...``: the entry point ``accelerate launch -m`` starts."""

import sys

from reasonflux_rl.prm_training.launch import main

main(sys.argv[1:])
