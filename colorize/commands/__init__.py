"""The library functions behind the commands: report, compare, list, export, colorize, launch."""
