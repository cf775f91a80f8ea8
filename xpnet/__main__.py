from xpnet.cli import run

run()
