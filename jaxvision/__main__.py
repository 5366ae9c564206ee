"""`python -m jaxvision <command> ...`: the `jaxvision` command (jaxvision.commands)."""

from jaxvision.commands import main

main()
