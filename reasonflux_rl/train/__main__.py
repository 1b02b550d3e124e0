from reasonflux_rl.train.launch import main

main()
