from sessionledger.infrastructure.cli import main

main()
