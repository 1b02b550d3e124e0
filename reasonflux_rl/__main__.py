from reasonflux_rl.cli import main

main()
