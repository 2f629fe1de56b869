from qnprov.cli import main

main()
