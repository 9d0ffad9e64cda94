from .tools.cli import run

run()
