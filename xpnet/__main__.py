from xpnet.cli import main

main()
