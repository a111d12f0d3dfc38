from peftstudio.cli import main

main()
